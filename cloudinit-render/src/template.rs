//! Seed templates: Python `string.Template` semantics, YAML-aware insertion.

use crate::scalar::{
    FLOW_INDICATORS, escape_double_quoted, is_plain_safe, needs_escape, safe_scalar,
};
use crate::yaml_context::{self, Ctx, Tok};
use crate::{Credential, Error, Os, RunnerSpec, UserData};

/// The placeholders a template may use.
pub(crate) const KNOWN: [&str; 6] = [
    "runner_name",
    "runner_user",
    "repo_url",
    "registration_token",
    "runner_labels",
    "jit_config",
];

/// One placeholder occurrence.
#[derive(Debug)]
pub(crate) struct Placeholder {
    pub(crate) name: String,
    /// 1-based line.
    pub(crate) line: usize,
}

/// A template split into characters and placeholders (`$$` already turned into `$`).
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) tokens: Vec<Tok>,
    pub(crate) placeholders: Vec<Placeholder>,
}

fn is_id_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Python's line and column for the `$` at char index `dollar` (what `string.Template` reports:
/// lines as `str.splitlines` counts them, column 1-based in characters).
fn python_position(chars: &[char], dollar: usize) -> (usize, usize) {
    let mut line = 1;
    let mut col = 0;
    let mut i = 0;
    while i <= dollar {
        let c = chars[i];
        col += 1;
        let is_break = matches!(
            c,
            '\n' | '\r'
                | '\u{0b}'
                | '\u{0c}'
                | '\u{1c}'
                | '\u{1d}'
                | '\u{1e}'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if is_break && i < dollar {
            if c == '\r' && chars.get(i + 1) == Some(&'\n') && i + 1 < dollar {
                i += 1;
            }
            line += 1;
            col = 0;
        }
        i += 1;
    }
    (line, col)
}

/// Splits `text` as `string.Template.substitute` would read it. `strict`: an invalid `$` or an
/// unknown name is an error (the first one in the text, as Python raises); otherwise it is kept as
/// literal text.
pub(crate) fn parse(text: &str, strict: bool) -> Result<Parsed, Error> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::with_capacity(chars.len());
    let mut placeholders = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            if c == '\n' {
                line += 1;
            }
            tokens.push(Tok::Char(c));
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        // `$$` → `$`
        if next == Some('$') {
            tokens.push(Tok::Char('$'));
            i += 2;
            continue;
        }
        // `$name` or `${name}`
        let start = match next {
            Some(n) if is_id_start(n) => Some((i + 1, false)),
            Some('{') if chars.get(i + 2).is_some_and(|&n| is_id_start(n)) => Some((i + 2, true)),
            _ => None,
        };
        let (name_start, braced) = start.unwrap_or((i + 1, false));
        let mut end = name_start;
        while start.is_some() && end < chars.len() && is_id_char(chars[end]) {
            end += 1;
        }
        let valid = end > name_start && (!braced || chars.get(end) == Some(&'}'));
        if !valid {
            if strict {
                let (line, col) = python_position(&chars, i);
                return Err(Error::InvalidPlaceholder { line, col });
            }
            tokens.push(Tok::Char('$'));
            i += 1;
            continue;
        }
        let name: String = chars[name_start..end].iter().collect();
        let after = if braced { end + 1 } else { end };
        if !KNOWN.contains(&name.as_str()) {
            if strict {
                return Err(Error::UnknownPlaceholder { name, line });
            }
            tokens.extend(chars[i..after].iter().map(|&c| Tok::Char(c)));
            i = after;
            continue;
        }
        tokens.push(Tok::Ph(placeholders.len()));
        placeholders.push(Placeholder { name, line });
        i = after;
    }
    Ok(Parsed {
        tokens,
        placeholders,
    })
}

/// The placeholders `template_text` uses, in order of first use, without repeats.
///
/// This is the validation `dispatcher check` runs: Python `string.Template` rules apply, so a
/// `$` that starts no valid placeholder and an unknown name are errors naming the line.
///
/// # Errors
/// [`Error::InvalidPlaceholder`] (`Invalid placeholder in string: line N, col M`, as Python) or
/// [`Error::UnknownPlaceholder`], for the first problem in the text.
pub fn template_placeholders(template_text: &str) -> Result<Vec<String>, Error> {
    let parsed = parse(template_text, true)?;
    let mut names: Vec<String> = Vec::new();
    for p in parsed.placeholders {
        if !names.contains(&p.name) {
            names.push(p.name);
        }
    }
    Ok(names)
}

/// Whether the template uses `${registration_token}` (or `$registration_token`): the dispatcher
/// then mints a registration token instead of a JIT config. Lenient: an otherwise malformed
/// template still answers (use [`template_placeholders`] to validate it).
#[must_use]
pub fn template_uses_registration_token(template_text: &str) -> bool {
    parse(template_text, false).is_ok_and(|p| {
        p.placeholders
            .iter()
            .any(|ph| ph.name == "registration_token")
    })
}

/// A placeholder's value and whether it is the credential.
struct Value<'a> {
    text: &'a str,
    secret: bool,
}

fn unsafe_value(p: &Placeholder, context: &'static str, reason: &'static str) -> Error {
    Error::UnsafeValue {
        name: p.name.clone(),
        line: p.line,
        context,
        reason,
    }
}

fn has_control(v: &str) -> bool {
    v.chars().any(|c| c != '\t' && needs_escape(c))
}

/// The text that replaces one placeholder, or why it cannot be inserted there.
fn insertion(parsed: &Parsed, ctxs: &[Ctx], values: &[String], k: usize) -> Result<String, Error> {
    let p = &parsed.placeholders[k];
    let v = values[k].as_str();
    match &ctxs[k] {
        Ctx::Standalone { in_flow } => Ok(safe_scalar(v, *in_flow)),
        Ctx::DoubleQuoted => Ok(escape_double_quoted(v)),
        Ctx::AfterBackslash => Err(unsafe_value(
            p,
            "inside a double-quoted string",
            "it follows a backslash, which would escape its first character",
        )),
        Ctx::SingleQuoted => {
            if has_control(v) {
                return Err(unsafe_value(
                    p,
                    "inside a single-quoted string",
                    "it contains a line break or control character (use a double-quoted string)",
                ));
            }
            Ok(v.replace('\'', "''"))
        }
        Ctx::Block { first_line_start } => {
            if has_control(v) {
                return Err(unsafe_value(
                    p,
                    "inside a block scalar",
                    "it contains a line break or control character",
                ));
            }
            if *first_line_start && v.starts_with(' ') {
                return Err(unsafe_value(
                    p,
                    "inside a block scalar",
                    "it starts with a space, which would change the block's indentation",
                ));
            }
            Ok(v.to_owned())
        }
        Ctx::Comment => {
            if has_control(v) {
                return Err(unsafe_value(
                    p,
                    "inside a comment",
                    "it contains a line break or control character",
                ));
            }
            Ok(v.to_owned())
        }
        Ctx::Token => {
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
            {
                return Err(unsafe_value(
                    p,
                    "inside an anchor, alias or tag",
                    "only ASCII letters, digits and _ - . / can stand there",
                ));
            }
            Ok(v.to_owned())
        }
        Ctx::Plain {
            in_flow,
            start,
            end,
        } => {
            let scalar = &parsed.tokens[*start..*end];
            if let Err(reason) = plain_check(scalar, values, k, *in_flow) {
                return Err(unsafe_value(p, plain_context(*in_flow), reason));
            }
            // Together with the scalar's other placeholders (each fine on its own), the whole
            // string must stay an unquoted string too (e.g. `${a}${b}` must not become `10`).
            let others_ok = scalar.iter().all(|t| match t {
                Tok::Ph(j) => plain_check(scalar, values, *j, *in_flow).is_ok(),
                Tok::Char(_) => true,
            });
            if others_ok {
                let all: Vec<usize> = scalar
                    .iter()
                    .filter_map(|t| match t {
                        Tok::Ph(j) => Some(*j),
                        Tok::Char(_) => None,
                    })
                    .collect();
                if !plain_stays_string(scalar, values, &all, *in_flow) {
                    return Err(unsafe_value(p, plain_context(*in_flow), CHANGES_TYPE));
                }
            }
            Ok(v.to_owned())
        }
    }
}

const CHANGES_TYPE: &str = "the resulting string would be read as something else (a YAML 1.1 bool, number or null, a leading indicator, edge whitespace); quote it in the template";

fn plain_context(in_flow: bool) -> &'static str {
    if in_flow {
        "inside an unquoted string in a flow collection [..]/{..}"
    } else {
        "inside a larger unquoted string"
    }
}

/// The scalar's text with the values of the placeholders in `real` and `x` for the others.
fn scalar_text(scalar: &[Tok], values: &[String], real: &[usize], neutral_all: bool) -> String {
    let mut out = String::new();
    for tok in scalar {
        match tok {
            Tok::Char(c) => out.push(*c),
            Tok::Ph(j) if !neutral_all && real.contains(j) => out.push_str(&values[*j]),
            Tok::Ph(_) => out.push('x'),
        }
    }
    out
}

/// Whether putting the values of `real` into the unquoted scalar keeps it the string it reads as:
/// only judged when the template's own text (placeholders as `x`) is a safe unquoted string.
fn plain_stays_string(scalar: &[Tok], values: &[String], real: &[usize], in_flow: bool) -> bool {
    let neutral = scalar_text(scalar, values, real, true);
    !is_plain_safe(&neutral, in_flow)
        || is_plain_safe(&scalar_text(scalar, values, real, false), in_flow)
}

/// Whether placeholder `k`'s value alone can go into this unquoted scalar.
fn plain_check(
    scalar: &[Tok],
    values: &[String],
    k: usize,
    in_flow: bool,
) -> Result<(), &'static str> {
    let v = values[k].as_str();
    if has_control(v) {
        return Err(
            "it contains a line break or control character (quote the string in the template)",
        );
    }
    if v.contains(": ")
        || v.ends_with(':')
        || v.contains(" #")
        || v.contains("\t#")
        || v.starts_with('#')
    {
        return Err(
            "it contains ': ', ' #' or a trailing ':', which would end the string (quote it in the template)",
        );
    }
    if in_flow && v.contains(FLOW_INDICATORS) {
        return Err("it contains , ? [ ] { or } (quote the string in the template)");
    }
    if !plain_stays_string(scalar, values, &[k], in_flow) {
        return Err(CHANGES_TYPE);
    }
    Ok(())
}

fn assemble(parsed: &Parsed, ctxs: &[Ctx], values: &[String]) -> Result<String, Error> {
    let mut out = String::with_capacity(parsed.tokens.len() + 256);
    for tok in &parsed.tokens {
        match tok {
            Tok::Char(c) => out.push(*c),
            Tok::Ph(k) => out.push_str(&insertion(parsed, ctxs, values, *k)?),
        }
    }
    Ok(out)
}

fn value<'a>(spec: &'a RunnerSpec, labels: &'a str, p: &Placeholder) -> Result<Value<'a>, Error> {
    let plain = |text| {
        Ok(Value {
            text,
            secret: false,
        })
    };
    match p.name.as_str() {
        "runner_name" => plain(&spec.runner_name),
        "runner_user" => plain(&spec.runner_user),
        "repo_url" => plain(&spec.target_url),
        "runner_labels" => plain(labels),
        "registration_token" => match &spec.credential {
            Credential::RegistrationToken(_) => Ok(Value {
                text: spec.credential.secret(),
                secret: true,
            }),
            Credential::Jit(_) => Err(Error::CredentialMismatch {
                name: "registration_token",
                line: p.line,
                needs: "registration token",
                has: "JIT config",
            }),
        },
        "jit_config" => match &spec.credential {
            Credential::Jit(_) => Ok(Value {
                text: spec.credential.secret(),
                secret: true,
            }),
            Credential::RegistrationToken(_) => Err(Error::CredentialMismatch {
                name: "jit_config",
                line: p.line,
                needs: "JIT config",
                has: "registration token",
            }),
        },
        // parse(strict) only lets known names through.
        other => Err(Error::UnknownPlaceholder {
            name: other.to_owned(),
            line: p.line,
        }),
    }
}

/// Renders a user-supplied template (the pools key `user_data_template`) for one runner.
///
/// Python `string.Template.substitute` semantics over `${runner_name}`, `${runner_user}`,
/// `${repo_url}` (the target URL), `${registration_token}`, `${runner_labels}` (comma-joined) and
/// `${jit_config}`, also in the `$name` form; `$$` is a literal `$`. The template is read as YAML
/// (line by line, without a full parser) to insert every value in the form that is safe where it
/// stands:
///
/// * alone as a scalar (`key: ${x}`, `- ${x}`, `[a, ${x}]`): a YAML-safe scalar, quoted when a YAML
///   1.1 reader could read it as anything but that string (`on`, `0755`, `12:30`, `a: b`, …);
/// * inside a double-quoted string: escaped (`"`, `\`, line breaks); single-quoted: `'` doubled;
/// * inside a larger unquoted string, a block scalar (`|`, `>`) or a comment: as is, but a value
///   that would break the line or change the YAML (line breaks, control characters, `: `, ` #`, …)
///   is refused with an error naming the placeholder and line.
///
/// The credential placeholder must match the credential kind: `${registration_token}` needs a
/// registration token, `${jit_config}` a JIT config (see [`template_uses_registration_token`]).
///
/// # Errors
/// [`Error::InvalidPlaceholder`], [`Error::UnknownPlaceholder`], [`Error::CredentialMismatch`],
/// [`Error::UnsafeValue`], and [`Error::InvalidSpec`]/[`Error::EmptyCredential`] for unusable input.
pub fn render_template(template_text: &str, spec: &RunnerSpec) -> Result<UserData, Error> {
    let parsed = parse(template_text, true)?;
    spec.validate(spec.os == Os::Linux)?;
    let labels = spec.labels_joined();
    let values = parsed
        .placeholders
        .iter()
        .map(|p| value(spec, &labels, p))
        .collect::<Result<Vec<_>, _>>()?;
    let ctxs = yaml_context::scan(&parsed.tokens, parsed.placeholders.len());
    let real: Vec<String> = values.iter().map(|v| v.text.to_owned()).collect();
    let text = assemble(&parsed, &ctxs, &real)?;
    let marker = spec.credential.marker();
    let shown: Vec<String> = values
        .iter()
        .map(|v| {
            if v.secret {
                marker.clone()
            } else {
                v.text.to_owned()
            }
        })
        .collect();
    let redacted = match assemble(&parsed, &ctxs, &shown) {
        Ok(r) => r,
        // The marker is always insertable; never show the secret anyway.
        Err(_) => text.replace(spec.credential.secret(), &marker),
    };
    Ok(UserData::new(text, redacted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_positions() {
        let chars: Vec<char> = "ab$ c".chars().collect();
        assert_eq!(python_position(&chars, 2), (1, 3));
        let chars: Vec<char> = "x\n$ ".chars().collect();
        assert_eq!(python_position(&chars, 2), (2, 1));
        let chars: Vec<char> = "x\r\ny\r\n  $".chars().collect();
        assert_eq!(python_position(&chars, 8), (3, 3));
        let chars: Vec<char> = "$".chars().collect();
        assert_eq!(python_position(&chars, 0), (1, 1));
    }

    #[test]
    fn parse_forms() {
        let p = parse("a $runner_name ${repo_url}$$ $$x", true).unwrap();
        let names: Vec<_> = p.placeholders.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["runner_name", "repo_url"]);
        assert!(matches!(
            parse("x\n ${runner_name", true),
            Err(Error::InvalidPlaceholder { line: 2, col: 2 })
        ));
        assert!(matches!(
            parse("x\n\n $nope", true),
            Err(Error::UnknownPlaceholder { line: 3, .. })
        ));
        // Lenient mode keeps the text.
        let p = parse("$ ${nope} $runner_user", false).unwrap();
        assert_eq!(p.placeholders.len(), 1);
    }
}
