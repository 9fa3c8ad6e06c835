//! JSON written the way Go's `json.Marshal` writes it, because test-server
//! answers a replayed request with `json.Marshal(bodySegments[i])`: object keys
//! sorted by their bytes, no whitespace, `<`, `>`, `&`, U+2028 and U+2029
//! escaped as `\u003c`…, and float64 numbers in Go's format (`1e+21`,
//! `1e-7`, `100000000000000000000`). ouli serves a test-server file with the
//! very bytes test-server would have sent.

use serde_json::Value;

/// Appends `value` as Go's `json.Marshal` would write it.
pub fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => write_number(number, out),
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Go marshals a map[string]any with its keys sorted by bytes.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write(item, out);
            }
            out.push(b'}');
        }
    }
}

/// Go-marshalled bytes of `value`.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write(value, &mut out);
    out
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\u{0}'..='\u{1f}' => {
                let code = c as u32;
                out.extend_from_slice(b"\\u");
                for shift in [12, 8, 4, 0] {
                    out.push(HEX[((code >> shift) & 0xf) as usize]);
                }
            }
            _ => {
                let mut buffer = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
    out.push(b'"');
}

fn write_number(number: &serde_json::Number, out: &mut Vec<u8>) {
    if number.is_u64() || number.is_i64() {
        out.extend_from_slice(number.to_string().as_bytes());
    } else if let Some(float) = number.as_f64() {
        out.extend_from_slice(go_float(float).as_bytes());
    } else {
        out.extend_from_slice(number.to_string().as_bytes());
    }
}

/// Go's `encoding/json` float64 format: the shortest digits that round-trip,
/// in exponent form when |f| < 1e-6 or |f| >= 1e21 (exponent written `e-7`,
/// `e+21`), else in plain decimal form without a trailing `.0`.
pub fn go_float(float: f64) -> String {
    if float == 0.0 {
        return if float.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // Rust's `{:e}` prints the shortest round-trip digits: `-1.25e-7`.
    let scientific = format!("{float:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("`{:e}` always writes an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` writes an integer exponent");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let magnitude = float.abs();
    if !(1e-6..1e21).contains(&magnitude) {
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        let digits = exponent.unsigned_abs();
        return if exponent < 0 {
            format!("{sign}{mantissa}e{exponent_sign}{digits}")
        } else {
            format!("{sign}{mantissa}e{exponent_sign}{digits:02}")
        };
    }
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut plain = String::from(sign);
    if exponent >= 0 {
        let integer_len = exponent as usize + 1;
        if digits.len() <= integer_len {
            plain.push_str(&digits);
            plain.extend(std::iter::repeat_n('0', integer_len - digits.len()));
        } else {
            plain.push_str(&digits[..integer_len]);
            plain.push('.');
            plain.push_str(&digits[integer_len..]);
        }
    } else {
        plain.push_str("0.");
        plain.extend(std::iter::repeat_n('0', (-exponent - 1) as usize));
        plain.push_str(&digits);
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_go_prints_them() {
        for (float, go) in [
            (1.5, "1.5"),
            (-2.25, "-2.25"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (0.0001234, "0.0001234"),
            (123456.789, "123456.789"),
            (3.0, "3"),
            (-1e300, "-1e+300"),
        ] {
            assert_eq!(go_float(float), go, "{float}");
        }
    }

    #[test]
    fn keys_sorted_and_html_characters_escaped() {
        let value: Value =
            serde_json::from_str(r#"{"b":"<a&b>","a":[1,2.5,null,true],"c":"\u2028\n\u0001"}"#)
                .unwrap();
        assert_eq!(
            String::from_utf8(to_vec(&value)).unwrap(),
            r#"{"a":[1,2.5,null,true],"b":"\u003ca\u0026b\u003e","c":"\u2028\n\u0001"}"#
        );
    }
}
