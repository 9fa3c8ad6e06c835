//! Go `regexp` patterns (test-server's `response_header_replacements`), read
//! as Go reads them and compiled with the `regex` crate.
//!
//! Both accept RE2 syntax, Unicode classes (`\p{Greek}`) included; they differ
//! where the same text means something else:
//! - Go's `\d`, `\w`, `\s`, `\b` (and their negations) are ASCII-only; the
//!   `regex` crate's are Unicode-aware. They are rewritten to ASCII classes.
//! - Go reads `\Q…\E` as a literal; the crate has no such syntax. The text is
//!   escaped instead.
//! - Inside a bracket class, Go reads `[`, `&&`, `--`-free text and `~~`
//!   literally; the crate reads `[` as a nested class and `&&`, `~~` as set
//!   operations. `[` (outside `[:name:]`), `&` and `~` are escaped there.
//!
//! The pattern is configuration, not client data; the rewrite is one pass
//! over it, and the compiled program is bounded ([`HEADER_REGEX_BYTES_MAX`]).

/// Compiled size limit of one header replacement regex: a pattern meant for
/// one header value never needs more, and a pathological one (`(a{1000}){1000}`)
/// is refused at start instead of taking the memory.
pub const HEADER_REGEX_BYTES_MAX: usize = 1 << 20;

/// Compiles `pattern` with Go's meaning.
pub fn compile(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&translate(pattern))
        .size_limit(HEADER_REGEX_BYTES_MAX)
        .dfa_size_limit(HEADER_REGEX_BYTES_MAX)
        .build()
}

/// Go's ASCII Perl classes, outside a bracket class.
fn perl_class(c: char) -> Option<&'static str> {
    Some(match c {
        'd' => "[0-9]",
        'D' => "[^0-9]",
        'w' => "[0-9A-Za-z_]",
        'W' => "[^0-9A-Za-z_]",
        's' => r"[\t\n\x0C\r ]",
        'S' => r"[^\t\n\x0C\r ]",
        'b' => r"(?-u:\b)",
        'B' => r"(?-u:\B)",
        _ => return None,
    })
}

/// The same classes inside a bracket class (nested classes are the crate's
/// syntax; Go has no `\b` there).
fn perl_class_in_brackets(c: char) -> Option<&'static str> {
    Some(match c {
        'd' => "0-9",
        'D' => "[^0-9]",
        'w' => "0-9A-Za-z_",
        'W' => "[^0-9A-Za-z_]",
        's' => r"\t\n\x0C\r ",
        'S' => r"[^\t\n\x0C\r ]",
        _ => return None,
    })
}

/// Rewrites a Go pattern into the `regex` crate's syntax (see the module doc).
/// Anything it does not recognise is copied as written, so the crate's own
/// error names a bad pattern.
pub fn translate(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars().peekable();
    // Inside `[...]`, and whether the next char is the class's first (where
    // `]` is a literal, in both syntaxes).
    let mut in_class = false;
    let mut class_start = false;
    while let Some(c) = chars.next() {
        let first_in_class = std::mem::replace(&mut class_start, false);
        match c {
            '\\' => {
                let Some(next) = chars.next() else {
                    out.push('\\');
                    break;
                };
                if next == 'Q' && !in_class {
                    let mut literal = String::new();
                    while let Some(q) = chars.next() {
                        if q == '\\' && chars.peek() == Some(&'E') {
                            chars.next();
                            break;
                        }
                        literal.push(q);
                    }
                    out.push_str(&regex::escape(&literal));
                    continue;
                }
                let class = if in_class {
                    perl_class_in_brackets(next)
                } else {
                    perl_class(next)
                };
                match class {
                    Some(replacement) => out.push_str(replacement),
                    None => {
                        out.push('\\');
                        out.push(next);
                    }
                }
            }
            '[' if !in_class => {
                in_class = true;
                class_start = true;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    chars.next();
                    out.push('^');
                }
            }
            '[' => {
                // `[:alpha:]` is a class in both; any other `[` is Go's literal.
                if chars.peek() == Some(&':') {
                    out.push('[');
                    for p in chars.by_ref() {
                        out.push(p);
                        if p == ']' {
                            break;
                        }
                    }
                } else {
                    out.push_str(r"\[");
                }
            }
            ']' if in_class && !first_in_class => {
                in_class = false;
                out.push(']');
            }
            '&' | '~' if in_class => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perl_classes_are_ascii_as_in_go() {
        let digits = compile(r"^\d+$").unwrap();
        assert!(digits.is_match("0123"));
        // Arabic-Indic digits: Unicode `\d`, not Go's.
        assert!(!digits.is_match("٠١٢"));
        assert!(!compile(r"^\w$").unwrap().is_match("é"));
        assert!(compile(r"^[\w-]+$").unwrap().is_match("a_b-9"));
        assert!(!compile(r"^[\w]+$").unwrap().is_match("é"));
        assert!(compile(r"^\S+\s\S+$").unwrap().is_match("a b"));
        assert!(!compile(r"^\s$").unwrap().is_match("\u{a0}"));
        assert!(compile(r"\bid\b").unwrap().is_match("an id here"));
    }

    #[test]
    fn unicode_classes_that_regex_lite_refused_compile() {
        let greek = compile(r"^\p{Greek}+$").unwrap();
        assert!(greek.is_match("αβγ"));
        assert!(!greek.is_match("abc"));
        assert!(compile(r"\pL").unwrap().is_match("ж"));
    }

    #[test]
    fn go_literals_stay_literal() {
        assert!(compile(r"\Qa.b*\E$").unwrap().is_match("xa.b*"));
        assert!(!compile(r"^\Qa.b\E$").unwrap().is_match("axb"));
        // `[` and `&&` inside a class are Go literals.
        let class = compile(r"^[[a&&]+$").unwrap();
        assert!(class.is_match("[a&"));
        assert!(!class.is_match("b"));
        assert!(compile(r"^[]a]+$").unwrap().is_match("]a"));
        assert!(compile(r"^[[:alpha:]]+$").unwrap().is_match("abc"));
        // Replacement groups as test-server's configs use them.
        let url = compile(r"^https://([^/]+)/(.*)$").unwrap();
        assert_eq!(
            url.replace("https://up.example/v1/x", "http://localhost:8080/$2"),
            "http://localhost:8080/v1/x"
        );
    }

    #[test]
    fn a_pattern_too_large_to_compile_is_refused() {
        assert!(compile(r"(\pL{100}){100}").is_err());
        assert!(compile("(unclosed").is_err());
    }
}
