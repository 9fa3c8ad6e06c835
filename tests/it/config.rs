//! Config loading and validation on real files: test-server's files load
//! unchanged, YAML and TOML agree, every refusal names file, key and why.

use ouli::chain::ChainMode;
use ouli::config::{Config, ConfigError, ExhaustedPolicy, ReadBackendChoice, Scheme};
use ouli::recording::Durability;
use std::path::{Path, PathBuf};

/// google/test-server's own sample (samples/google-genai.yml), byte for byte
/// in its keys, including the trailing space after the first host.
const TEST_SERVER_SAMPLE_YAML: &str = "\
endpoints:
  - target_host: generativelanguage.googleapis.com 
    target_port: 443
    source_port: 1443
    source_type: http
    target_type: https
    redact_request_headers:
      - X-Goog-Api-Key
      - Authorization
    response_header_replacements:
      - header: X-Goog-Upload-Url
        regex: \"^https://generativelanguage.googleapis.com/\"
        replace: \"http://localhost:1443\"
    shutdown_timeout_seconds: 5
  - target_host: us-central1-aiplatform.googleapis.com
    target_port: 443
    source_port: 1444
    source_type: http
    target_type: https
    health: /healthz
    redact_request_headers:
      - X-Goog-Api-Key
      - Authorization
    shutdown_timeout_seconds: 5
";

const TEST_SERVER_SAMPLE_TOML: &str = r#"
[[endpoints]]
target_host = "generativelanguage.googleapis.com"
target_port = 443
source_port = 1443
source_type = "http"
target_type = "https"
redact_request_headers = ["X-Goog-Api-Key", "Authorization"]
shutdown_timeout_seconds = 5

[[endpoints.response_header_replacements]]
header = "X-Goog-Upload-Url"
regex = "^https://generativelanguage.googleapis.com/"
replace = "http://localhost:1443"

[[endpoints]]
target_host = "us-central1-aiplatform.googleapis.com"
target_port = 443
source_port = 1444
source_type = "http"
target_type = "https"
health = "/healthz"
redact_request_headers = ["X-Goog-Api-Key", "Authorization"]
shutdown_timeout_seconds = 5
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn load_text(name: &str, text: &str) -> Result<(Config, Vec<String>), ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), name, text);
    Config::load(&path)
}

fn refusal(name: &str, text: &str) -> String {
    match load_text(name, text) {
        Ok((config, _)) => panic!("config was accepted: {config:#?}"),
        Err(error) => error.to_string(),
    }
}

fn endpoint_yaml(extra: &str) -> String {
    format!("endpoints:\n  - target_host: api.example.com\n    source_port: 18080\n{extra}")
}

#[test]
fn test_server_sample_loads_unchanged() {
    let (config, warnings) = load_text("test-server.yml", TEST_SERVER_SAMPLE_YAML).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.endpoints.len(), 2);
    let first = &config.endpoints[0];
    assert_eq!(first.target_host, "generativelanguage.googleapis.com");
    assert_eq!(first.target_type, Scheme::Https);
    assert_eq!(first.target_port, 443);
    assert_eq!(first.source_type, Scheme::Http);
    assert_eq!(first.source_port, 1443);
    assert_eq!(first.health, None);
    // Header names are case-insensitive; stored lower-case.
    assert_eq!(
        first.redact_request_headers,
        ["x-goog-api-key", "authorization"]
    );
    assert_eq!(first.response_header_replacements.len(), 1);
    assert_eq!(
        first.response_header_replacements[0].header,
        "x-goog-upload-url"
    );
    assert_eq!(
        first.response_header_replacements[0].regex,
        "^https://generativelanguage.googleapis.com/"
    );
    assert_eq!(
        first.response_header_replacements[0].replace,
        "http://localhost:1443"
    );
    assert_eq!(config.endpoints[1].health.as_deref(), Some("/healthz"));
    // shutdown_timeout_seconds: 5 → limits.shutdown_timeout_ms.
    assert_eq!(config.limits.shutdown_timeout_ms, 5_000);
    // ouli's defaults where test-server has no key.
    assert_eq!(config.listen_address.to_string(), "127.0.0.1");
    assert_eq!(config.chain, ChainMode::Request);
    assert_eq!(config.on_chain_exhausted, ExhaustedPolicy::Error);
    assert!(config.sensitive_json_keys.iter().any(|k| k == "password"));
}

#[test]
fn toml_loads_equal_to_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = write(dir.path(), "ouli.yaml", TEST_SERVER_SAMPLE_YAML);
    let toml = write(dir.path(), "ouli.toml", TEST_SERVER_SAMPLE_TOML);
    let (mut from_yaml, _) = Config::load(&yaml).unwrap();
    let (mut from_toml, warnings) = Config::load(&toml).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(from_toml.source.as_deref(), Some(toml.as_path()));
    from_yaml.source = None;
    from_toml.source = None;
    assert_eq!(from_yaml, from_toml);
}

#[test]
fn ouli_keys_are_read() {
    let text = "\
listen_address: 0.0.0.0
session_header: X-Session
chain: session
on_chain_exhausted: repeat-last
durability: every-interaction
read_backend: io-uring
secrets: [s3cr3t, \"\"]
sensitive_json_keys: [pin]
matching:
  ignore_headers: [x-request-id]
  ignore_query_params: [ts]
limits:
  request_body_bytes_max: 1024
  shutdown_timeout_ms: 250
endpoints:
  - target_host: localhost
    target_type: http
    target_port: 9000
    source_port: 0
    shutdown_timeout_seconds: 30
    matching:
      ignore_json_paths: [$.meta.id]
";
    let (config, warnings) = load_text("ouli.yaml", text).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.listen_address.to_string(), "0.0.0.0");
    assert_eq!(config.session_header.as_deref(), Some("x-session"));
    assert_eq!(config.chain, ChainMode::Session);
    assert_eq!(config.on_chain_exhausted, ExhaustedPolicy::RepeatLast);
    assert_eq!(config.durability, Durability::EveryInteraction);
    assert_eq!(config.read_backend, ReadBackendChoice::IoUring);
    assert_eq!(config.secrets, ["s3cr3t"], "empty secrets are dropped");
    assert_eq!(config.sensitive_json_keys, ["pin"]);
    assert_eq!(config.limits.request_body_bytes_max, 1024);
    // limits.shutdown_timeout_ms wins over test-server's per-endpoint seconds.
    assert_eq!(config.limits.shutdown_timeout_ms, 250);
    let endpoint = &config.endpoints[0];
    assert_eq!(endpoint.target_type, Scheme::Http);
    // Per-endpoint matching overrides key by key, keeping the global ones.
    assert_eq!(endpoint.matching.ignore_json_paths, ["$.meta.id"]);
    assert_eq!(endpoint.matching.ignore_headers, ["x-request-id"]);
    assert_eq!(endpoint.matching.ignore_query_params, ["ts"]);
    assert!(config.matching.ignore_json_paths.is_empty());
}

#[test]
fn missing_target_type_means_https_as_test_server_dials() {
    let (config, _) = load_text("ouli.yaml", &endpoint_yaml("")).unwrap();
    assert_eq!(config.endpoints[0].target_type, Scheme::Https);
    assert_eq!(config.endpoints[0].target_port, 443);
}

#[test]
fn malformed_yaml_names_file_and_line() {
    let text = "endpoints:\n  - target_host: a\n    source_port: [1, 2\n";
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "broken.yaml", text);
    let error = Config::load(&path).unwrap_err();
    match &error {
        ConfigError::Parse { path: p, line, .. } => {
            assert_eq!(p, &path);
            assert!(matches!(line, Some(3) | Some(4)), "line {line:?}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    assert!(error.to_string().contains("broken.yaml:"), "{error}");
}

#[test]
fn malformed_toml_names_file_and_line() {
    let text = "[[endpoints]]\ntarget_host = \"a\"\nsource_port = = 3\n";
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "broken.toml", text);
    match Config::load(&path).unwrap_err() {
        ConfigError::Parse { line, .. } => assert_eq!(line, Some(3)),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn wrong_type_names_the_key_and_line() {
    let message = refusal(
        "ouli.yaml",
        "endpoints:\n  - target_host: a\n    source_port: eighty\n",
    );
    assert!(message.contains("ouli.yaml:3"), "{message}");
    assert!(message.contains("source_port"), "{message}");
}

#[test]
fn unknown_keys_are_warnings_naming_them() {
    let text = "\
colour: blue
endpoints:
  - target_host: api.example.com
    source_port: 18080
    tls_mode: strict
    response_header_replacements:
      - header: Location
        regex: x
        replace: y
        flags: i
limits:
  bogus_max: 3
";
    let (config, warnings) = load_text("ouli.yaml", text).unwrap();
    assert_eq!(config.endpoints.len(), 1);
    let joined = warnings.join("\n");
    for key in [
        "`colour`",
        "`endpoints[0].tls_mode`",
        "`endpoints[0].response_header_replacements[0].flags`",
        "`limits.bogus_max`",
    ] {
        assert!(joined.contains(key), "no warning for {key}: {joined}");
    }
    assert_eq!(warnings.len(), 4, "{joined}");
}

#[test]
fn source_type_https_is_served_and_its_tls_keys_are_read() {
    use ouli::config::{Scheme, TargetProtocol};
    let (config, warnings) =
        load_text("ouli.yaml", &endpoint_yaml("    source_type: https\n")).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let endpoint = &config.endpoints[0];
    assert_eq!(endpoint.source_type, Scheme::Https);
    assert_eq!(endpoint.tls_files, None, "a generated certificate");
    assert_eq!(endpoint.target_protocol, TargetProtocol::Http1);
    assert_eq!(config.limits.h2_max_concurrent_streams, 100);
    assert_eq!(config.limits.h2_max_pending_reset_streams, 20);
    assert_eq!(
        config.limits.h2_max_header_list_bytes as usize,
        config.limits.header_bytes_max
    );
    // One of the pair alone is refused, naming the missing key.
    let error = load_text(
        "ouli.yaml",
        &endpoint_yaml("    source_type: https\n    tls_cert_file: cert.pem\n"),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("endpoints[0].tls_key_file"), "{error}");
    let error = load_text("ouli.yaml", &endpoint_yaml("    target_protocol: h3\n"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("endpoints[0].target_protocol"), "{error}");
}

#[test]
fn the_h2_header_list_limit_follows_header_bytes_max_unless_set() {
    let text = format!("{}limits:\n  header_bytes_max: 4096\n", endpoint_yaml(""));
    let (config, _) = load_text("ouli.yaml", &text).unwrap();
    assert_eq!(config.limits.h2_max_header_list_bytes, 4096);
    let text = format!(
        "{}limits:\n  header_bytes_max: 4096\n  h2_max_header_list_bytes: 9000\n  h2_max_concurrent_streams: 3\n  h2_max_pending_reset_streams: 4\n",
        endpoint_yaml("")
    );
    let (config, warnings) = load_text("ouli.yaml", &text).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.limits.h2_max_header_list_bytes, 9000);
    assert_eq!(config.limits.h2_max_concurrent_streams, 3);
    assert_eq!(config.limits.h2_max_pending_reset_streams, 4);
    let text = format!(
        "{}limits:\n  h2_max_concurrent_streams: 0\n",
        endpoint_yaml("")
    );
    let error = load_text("ouli.yaml", &text).unwrap_err().to_string();
    assert!(
        error.contains("limits.h2_max_concurrent_streams"),
        "{error}"
    );
}

#[test]
fn bad_regex_is_refused_naming_endpoint_and_index() {
    let text = "\
endpoints:
  - target_host: a.example
    source_port: 18080
  - target_host: b.example
    source_port: 18081
    response_header_replacements:
      - header: Location
        regex: ok
        replace: fine
      - header: Location
        regex: \"(unclosed\"
        replace: x
";
    let message = refusal("ouli.yaml", text);
    assert!(
        message.contains("endpoints[1].response_header_replacements[1].regex"),
        "{message}"
    );
    assert!(message.contains("(unclosed"), "{message}");
}

/// Go's `regexp` accepts Unicode classes; test-server configs that use them
/// load, and `\\d` keeps Go's ASCII meaning.
#[test]
fn go_regexp_syntax_loads_with_gos_meaning() {
    let text = "\
endpoints:
  - target_host: a.example
    source_port: 18080
    response_header_replacements:
      - header: X-Name
        regex: '^\\p{Greek}+-(\\d+)$'
        replace: 'n-$1'
";
    let (config, _) = load_text("ouli.yaml", text).unwrap();
    let replacement = &config.endpoints[0].response_header_replacements[0];
    let regex = ouli::config::header_regex(&replacement.regex).unwrap();
    assert_eq!(regex.replace("αβ-42", replacement.replace.as_str()), "n-42");
    // Arabic-Indic digits are `\\d` to the regex crate, not to Go.
    assert!(!regex.is_match("αβ-٤٢"));
}

#[test]
fn sixty_five_endpoints_are_refused() {
    let mut text = String::from("endpoints:\n");
    for i in 0..65 {
        text.push_str(&format!(
            "  - target_host: h{i}.example\n    source_port: {}\n",
            20000 + i
        ));
    }
    let message = refusal("ouli.yaml", &text);
    assert!(message.contains("endpoints"), "{message}");
    assert!(message.contains("65"), "{message}");
    assert!(message.contains("64"), "{message}");
}

#[test]
fn no_endpoints_is_refused() {
    assert!(refusal("ouli.yaml", "").contains("endpoints"));
    assert!(refusal("ouli.yaml", "endpoints: []\n").contains("at least one endpoint"));
}

#[test]
fn duplicate_source_port_is_refused() {
    let text = "\
endpoints:
  - target_host: a.example
    source_port: 18080
  - target_host: b.example
    source_port: 0
  - target_host: c.example
    source_port: 0
  - target_host: d.example
    source_port: 18080
";
    let message = refusal("ouli.yaml", text);
    assert!(message.contains("endpoints[3].source_port"), "{message}");
    assert!(message.contains("endpoints[0]"), "{message}");
}

#[test]
fn each_invalid_value_names_its_key() {
    let cases: &[(&str, &str)] = &[
        ("    target_port: 70000\n", "endpoints[0].target_port"),
        ("    target_port: -1\n", "endpoints[0].target_port"),
        ("    target_type: ftp\n", "endpoints[0].target_type"),
        ("    health: healthz\n", "endpoints[0].health"),
        ("    health: /__ouli/health\n", "endpoints[0].health"),
        (
            "    redact_request_headers: [\"bad header\"]\n",
            "endpoints[0].redact_request_headers[0]",
        ),
        (
            "    shutdown_timeout_seconds: 0\n",
            "endpoints[0].shutdown_timeout_seconds",
        ),
        ("limits:\n  connections_max: 0\n", "limits.connections_max"),
        ("chain: sometimes\n", "chain"),
        ("on_chain_exhausted: loop\n", "on_chain_exhausted"),
        ("durability: always\n", "durability"),
        ("read_backend: floppy\n", "read_backend"),
        ("listen_address: localhost\n", "listen_address"),
        ("ca_file: /nonexistent/ca.pem\n", "ca_file"),
    ];
    for (extra, key) in cases {
        let message = refusal("ouli.yaml", &endpoint_yaml(extra));
        assert!(
            message.contains(&format!("ouli.yaml: {key}:")),
            "{extra:?} → {message}"
        );
    }
    let message = refusal(
        "ouli.yaml",
        "endpoints:\n  - target_host: \"\"\n    source_port: 1\n",
    );
    assert!(message.contains("endpoints[0].target_host"), "{message}");
}

#[test]
fn ca_file_is_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.pem", "-----BEGIN CERTIFICATE-----\n");
    let path = write(dir.path(), "ouli.yaml", &endpoint_yaml("ca_file: ca.pem\n"));
    let (config, _) = Config::load(&path).unwrap();
    assert_eq!(config.ca_file, Some(dir.path().join("ca.pem")));
}

#[test]
fn missing_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.yaml");
    let error = Config::load(&path).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains("absent.yaml"), "{error}");
}

#[test]
fn toml_unknown_keys_and_invalid_values_are_reported_too() {
    let text =
        "colour = \"blue\"\n[[endpoints]]\ntarget_host = \"a.example\"\nsource_port = 70000\n";
    let message = refusal("ouli.toml", text);
    assert!(
        message.contains("ouli.toml: endpoints[0].source_port:"),
        "{message}"
    );
    let text = "colour = \"blue\"\n[[endpoints]]\ntarget_host = \"a.example\"\ntls = true\n";
    let (_, warnings) = load_text("ouli.toml", text).unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains("`colour`") || warnings[1].contains("`colour`"),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("`endpoints[0].tls`")),
        "{warnings:?}"
    );
}
