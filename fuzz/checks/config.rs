//! `config`: config text parsed and validated as `ouli` reads a file, YAML
//! or TOML (the first byte's low bit). Nothing panics; an error is a
//! `ConfigError` naming the source it was given; a config that validates has
//! an endpoint and reads the same when given again.

use std::path::Path;

use ouli::config::{Config, ConfigError, Format};

use super::Input;

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let (format, path) = if input.byte() & 1 == 0 {
        (Format::Yaml, Path::new("/nonexistent-ouli-fuzz/ouli.yaml"))
    } else {
        (Format::Toml, Path::new("/nonexistent-ouli-fuzz/ouli.toml"))
    };
    let text = String::from_utf8_lossy(input.rest());
    match Config::from_text(&text, format, path) {
        Ok((config, warnings)) => {
            assert!(
                !config.endpoints.is_empty(),
                "a config without endpoints validated"
            );
            let (again, warnings_again) =
                Config::from_text(&text, format, path).expect("the same text validates again");
            assert_eq!(config, again);
            assert_eq!(warnings, warnings_again);
        }
        Err(error) => {
            let named = match &error {
                ConfigError::Read { path, .. }
                | ConfigError::Parse { path, .. }
                | ConfigError::Invalid { path, .. } => path,
            };
            assert_eq!(named, path, "the error names another source: {error}");
            let message = error.to_string();
            assert!(
                message.starts_with(&path.display().to_string()),
                "the message does not name the source: {message}"
            );
        }
    }
}
