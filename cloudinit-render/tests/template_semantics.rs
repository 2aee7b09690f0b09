//! Seed-template semantics: Python `string.Template.substitute`, checked against Python itself.

mod common;

use cloudinit_render::{
    Error, render_template, template_placeholders, template_uses_registration_token,
};
use common::*;

fn render(t: &str) -> Result<String, Error> {
    render_template(t, &linux_token()).map(|u| u.expose().to_owned())
}

#[test]
fn dollar_dollar_is_a_literal_dollar() {
    assert_eq!(
        render("a: $$HOME $${runner_name} $$$$\n").unwrap(),
        "a: $HOME ${runner_name} $$\n"
    );
}

#[test]
fn both_placeholder_forms() {
    assert_eq!(
        render("a: $runner_name-$runner_user ${repo_url}/x\n").unwrap(),
        "a: gh-runner-201-ci https://github.com/NREL/EnergyPlus/x\n"
    );
}

#[test]
fn unknown_placeholder_names_it_and_its_line() {
    let err = render("#cloud-config\nhostname: ${runner_name}\nx: ${runner_nmae}\n").unwrap_err();
    assert!(
        matches!(&err, Error::UnknownPlaceholder { name, line: 3 } if name == "runner_nmae"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("unknown placeholder ${runner_nmae} at line 3"),
        "{err}"
    );
    // Python names are case-sensitive and greedy.
    assert!(
        matches!(render("$RUNNER_NAME"), Err(Error::UnknownPlaceholder { name, .. }) if name == "RUNNER_NAME")
    );
    assert!(
        matches!(render("$runner_names"), Err(Error::UnknownPlaceholder { name, .. }) if name == "runner_names")
    );
}

#[test]
fn lone_dollar_is_an_error_like_python() {
    assert_eq!(
        render("a: 1\nb: cost $ 5\n").unwrap_err().to_string(),
        "Invalid placeholder in string: line 2, col 9"
    );
    assert_eq!(
        render("x: ${runner_name").unwrap_err().to_string(),
        "Invalid placeholder in string: line 1, col 4"
    );
    assert_eq!(
        render("x: ${ runner_name }").unwrap_err().to_string(),
        "Invalid placeholder in string: line 1, col 4"
    );
    assert_eq!(
        render("x: $1").unwrap_err().to_string(),
        "Invalid placeholder in string: line 1, col 4"
    );
    assert_eq!(
        render("x: y $").unwrap_err().to_string(),
        "Invalid placeholder in string: line 1, col 6"
    );
}

#[test]
fn placeholders_listing_and_credential_kind() {
    let seed = fixture("seed-runner-user-data.pkrtpl");
    assert_eq!(
        template_placeholders(&seed).unwrap(),
        [
            "runner_name",
            "repo_url",
            "registration_token",
            "runner_labels"
        ]
    );
    assert!(template_uses_registration_token(&seed));
    let jit = fixture("jit-user-data.pkrtpl");
    assert_eq!(
        template_placeholders(&jit).unwrap(),
        [
            "runner_name",
            "runner_user",
            "jit_config",
            "runner_labels",
            "repo_url"
        ]
    );
    assert!(!template_uses_registration_token(&jit));
    assert!(template_uses_registration_token("x: $registration_token"));
    assert!(!template_uses_registration_token("x: $$registration_token"));
    // Lenient: still answers for a malformed template; the validating call names the problem.
    assert!(template_uses_registration_token(
        "a: $ b\nc: ${registration_token}"
    ));
    assert!(matches!(
        template_placeholders("a: $ b\nc: ${registration_token}"),
        Err(Error::InvalidPlaceholder { line: 1, col: 4 })
    ));
    assert!(matches!(
        template_placeholders("${nope}"),
        Err(Error::UnknownPlaceholder { .. })
    ));
}

#[test]
fn standalone_values_are_quoted_when_ambiguous() {
    let mut spec = linux_token();
    spec.runner_name = "on".into();
    spec.runner_user = "no".into();
    spec.labels = vec!["12:30".into()];
    let t = "hostname: ${runner_name}\nusers:\n  - $runner_user\nl: [${runner_labels}, x]\nq: \"${runner_name}\"\n";
    assert_eq!(
        render_template(t, &spec).unwrap().expose(),
        "hostname: \"on\"\nusers:\n  - \"no\"\nl: [\"12:30\", x]\nq: \"on\"\n"
    );
}

#[test]
fn quoted_contexts_are_escaped() {
    let mut spec = linux_token();
    spec.runner_name = "it's \"x\" \\".into();
    let t = "a: \"n=${runner_name}\"\nb: 'n=${runner_name}'\n";
    assert_eq!(
        render_template(t, &spec).unwrap().expose(),
        "a: \"n=it's \\\"x\\\" \\\\\"\nb: 'n=it''s \"x\" \\'\n"
    );
}

#[test]
fn values_that_would_break_an_unquoted_string_are_refused() {
    let mut spec = linux_token();
    let t = "runcmd:\n  - run-once.sh --labels ${runner_labels} --name ${runner_name}\n";
    for (labels, expect) in [
        (vec!["a: b".to_owned()], "': '"),
        (vec!["x #y".to_owned()], "' #'"),
        (vec!["#y".to_owned()], "' #'"),
        (vec!["end:".to_owned()], "trailing ':'"),
    ] {
        spec.labels = labels;
        let err = render_template(t, &spec).unwrap_err().to_string();
        assert!(err.starts_with("value of ${runner_labels} at line 2 cannot be inserted inside a larger unquoted string"), "{err}");
        assert!(err.contains(expect), "{err}");
    }
    // Inside a flow collection, flow indicators too.
    spec.labels = vec!["a]".into()];
    let err = render_template("x: [a ${runner_labels}]\n", &spec)
        .unwrap_err()
        .to_string();
    assert!(err.contains("flow collection"), "{err}");
    // Two placeholders that only together read as a number.
    spec.runner_name = "1".into();
    spec.runner_user = "_0".into();
    let err = render_template("x: ${runner_name}${runner_user}\n", &spec)
        .unwrap_err()
        .to_string();
    assert!(err.contains("YAML 1.1 bool, number"), "{err}");
    // Values that are harmless there go in as they are.
    spec.labels = vec!["on".into(), "0755".into(), "a:b".into(), "c#d".into()];
    assert_eq!(
        render_template(t, &spec).unwrap().expose(),
        "runcmd:\n  - run-once.sh --labels on,0755,a:b,c#d --name 1\n"
    );
}

/// Python's own `string.Template.substitute` on the same templates: same text, same errors.
#[test]
fn matches_python_string_template() {
    let templates: Vec<String> = [
        "plain text with $runner_name and ${repo_url}",
        "a: $$ $$runner_name $$$$ $runner_user",
        "$runner_name-x ${runner_name}_y",
        "x $ y",
        "a\nb ${ runner_name }",
        "line1\r\nline2 $1",
        "$",
        "${runner_name",
        "é ü: $runner_name $",
        "a\u{0b}b\u{0c}c\u{85}d\u{2028} $!",
        "$nope",
        "${RUNNER_NAME}",
        "$runner_names",
        "ok $runner_labels\nthen $ bad and ${unknown}",
        "first ${unknown} then $",
        "tab\t$registration_token",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    const SCRIPT: &str = r#"
import json, string, sys
req = json.load(sys.stdin)
out = []
for t in req["templates"]:
    try:
        out.append({"ok": string.Template(t).substitute(req["mapping"])})
    except KeyError as e:
        out.append({"key_error": e.args[0]})
    except ValueError as e:
        out.append({"value_error": str(e)})
json.dump(out, sys.stdout)
"#;
    let spec = linux_token();
    let mapping = serde_json::json!({
        "runner_name": spec.runner_name,
        "runner_user": spec.runner_user,
        "repo_url": spec.target_url,
        "runner_labels": spec.labels.join(","),
        "registration_token": TOKEN,
    });
    let input = serde_json::json!({ "templates": templates, "mapping": mapping }).to_string();
    let Some(out) = python(SCRIPT, &input) else {
        return;
    };
    let expected: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    for (t, exp) in templates.iter().zip(&expected) {
        let got = render(t);
        match (
            exp.get("ok"),
            exp.get("key_error"),
            exp.get("value_error"),
            &got,
        ) {
            (Some(ok), _, _, Ok(text)) => assert_eq!(ok.as_str().unwrap(), text, "template {t:?}"),
            (_, Some(name), _, Err(Error::UnknownPlaceholder { name: n, .. })) => {
                assert_eq!(name.as_str().unwrap(), n, "template {t:?}");
            }
            (_, _, Some(msg), Err(e @ Error::InvalidPlaceholder { .. })) => {
                assert_eq!(msg.as_str().unwrap(), e.to_string(), "template {t:?}");
            }
            _ => panic!("template {t:?}: python {exp}, we {got:?}"),
        }
    }
}
