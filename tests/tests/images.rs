//! Validation of `images/` (issue 8): the Packer templates, the guest files and the build scripts.
//!
//! * Packer HCL (parsed with `hcl-rs`): every `var.X`/`local.X` used is declared and every declared one is
//!   used, every file referenced by a provisioner, `http_*`, `cd_files`, `file()` or `templatefile()` exists,
//!   `templatefile()` passes exactly the placeholders its template uses, secrets are `sensitive = true`.
//! * External validators: `shellcheck`, `cloud-init schema`, `xmllint` (+ XPath), `systemd-analyze verify`,
//!   `packer fmt -check` / `packer validate -syntax-only`, and a PowerShell syntax check with the PyPI
//!   `tree-sitter` + `tree-sitter-powershell` packages. A validator that is not installed skips its test,
//!   except when the `CI` environment variable is set: then the test fails.
//! * Behaviour, with stubbed tools: `run-jit.sh`, `run-once.sh` and `packer-build.sh`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hcl::expr::{Expression, ObjectKey, Operation, TemplateExpr, TraversalOperator};
use hcl::template::{Directive, Element, Template};
use hcl::{Block, Body};

const TEMPLATE_DIRS: [&str; 3] = ["ubuntu-2404", "ubuntu-2204", "windows-2022"];
const UBUNTU_DIRS: [&str; 2] = ["ubuntu-2404", "ubuntu-2204"];

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

fn images_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
    fs::canonicalize(&dir).unwrap_or_else(|e| panic!("images dir {}: {e}", dir.display()))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn write(path: &Path, content: &str) {
    fs::write(path, content).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The tool's path; `None` (skip) when it is missing, unless `CI` is set: then the test fails.
fn require_tool(name: &str) -> Option<PathBuf> {
    match find_tool(name) {
        Some(path) => Some(path),
        None if in_ci() => {
            panic!("`{name}` is not installed but CI is set: .ci/run must install it")
        }
        None => {
            eprintln!(
                "SKIPPED: `{name}` is not installed (this test fails instead when CI is set)"
            );
            None
        }
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// All files below `dir` whose name ends with `suffix`, sorted.
fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let entries = fs::read_dir(&current)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", current.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

/// Renders a Packer `templatefile()` template that only uses `${name}` interpolations.
fn render_packer_template(content: &str, values: &[(&str, &str)]) -> String {
    let mut out = content.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("${{{name}}}"), value);
    }
    assert!(
        !out.contains("${"),
        "unrendered placeholder left in:\n{out}"
    );
    assert!(
        !out.contains("%{"),
        "template directives are not expected:\n{out}"
    );
    out
}

/// Renders like Python's `string.Template.substitute` (what the dispatcher uses): `$$`, `${name}`, `$name`;
/// an unknown placeholder or a lone `$` is an error.
fn render_python_template(content: &str, values: &BTreeMap<&str, &str>) -> Result<String, String> {
    let is_ident_start = |c: char| c == '_' || c.is_ascii_alphabetic();
    let is_ident = |c: char| c == '_' || c.is_ascii_alphanumeric();
    let chars: Vec<char> = content.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '$' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let name: String;
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
                continue;
            }
            Some('{') => {
                let end = chars[i + 2..]
                    .iter()
                    .position(|&c| c == '}')
                    .ok_or_else(|| format!("unterminated placeholder at char {i}"))?;
                name = chars[i + 2..i + 2 + end].iter().collect();
                if name.is_empty() || !name.chars().all(is_ident) {
                    return Err(format!("invalid placeholder ${{{name}}}"));
                }
                i += end + 3;
            }
            Some(&c) if is_ident_start(c) => {
                let len = chars[i + 1..].iter().take_while(|&&c| is_ident(c)).count();
                name = chars[i + 1..i + 1 + len].iter().collect();
                i += len + 1;
            }
            _ => return Err(format!("invalid placeholder: lone '$' at char {i}")),
        }
        let value = values
            .get(name.as_str())
            .ok_or_else(|| format!("unknown placeholder ${name}"))?;
        out.push_str(value);
    }
    Ok(out)
}

/// The Python interpreter that runs cloud-init (it has PyYAML), read from cloud-init's shebang.
fn cloud_init_python(cloud_init: &Path) -> PathBuf {
    let script = read(cloud_init);
    let shebang = script.lines().next().unwrap_or_default();
    let interpreter = shebang
        .strip_prefix("#!")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no shebang in {}", cloud_init.display()));
    PathBuf::from(interpreter)
}

/// Parses YAML with PyYAML (through cloud-init's Python) and returns it as JSON.
fn yaml_to_json(python: &Path, yaml: &str) -> serde_json::Value {
    let mut child = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write yaml");
    let output = child.wait_with_output().expect("python output");
    assert!(
        output.status.success(),
        "YAML does not parse: {}\n{yaml}",
        text(&output)
    );
    serde_json::from_slice(&output.stdout).expect("python printed JSON")
}

fn cloud_init_schema(cloud_init: &Path, name: &str, config: &str) {
    let dir = temp_dir();
    let file = dir.path().join(name);
    write(&file, config);
    let output = run(Command::new(cloud_init)
        .args(["schema", "--config-file"])
        .arg(&file));
    let out = text(&output);
    assert!(
        output.status.success() && out.contains("Valid cloud-config"),
        "cloud-init schema rejected {name}:\n{out}\n--- file ---\n{config}"
    );
}

// ---------------------------------------------------------------------------------------------------------
// HCL analysis
// ---------------------------------------------------------------------------------------------------------

/// What one template directory declares and references.
#[derive(Default)]
struct Analysis {
    variables: BTreeMap<String, Body>,
    locals: BTreeSet<String>,
    used_vars: BTreeSet<String>,
    used_locals: BTreeSet<String>,
    /// (where, expression) of every path expression that must name an existing file or glob.
    paths: Vec<(String, Expression)>,
    /// (where, path expression, variables object) of every `templatefile()` call.
    templatefiles: Vec<(String, Expression, Option<Expression>)>,
    /// Files that hold a `packer {}` block.
    packer_block_files: Vec<PathBuf>,
}

fn parse_hcl(path: &Path) -> Body {
    hcl::parse(&read(path)).unwrap_or_else(|e| panic!("{} is not valid HCL: {e}", path.display()))
}

fn hcl_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".pkr.hcl"))
        .collect();
    files.sort();
    files
}

fn analyse_dir(dir: &Path) -> Analysis {
    let mut analysis = Analysis::default();
    let files = hcl_files(dir);
    assert!(!files.is_empty(), "no *.pkr.hcl in {}", dir.display());
    for file in files {
        let body = parse_hcl(&file);
        let name = file
            .file_name()
            .and_then(OsStr::to_str)
            .unwrap_or_default()
            .to_owned();
        if let Some(attr) = body.attributes().next() {
            panic!("{name}: unexpected top-level attribute `{}`", attr.key());
        }
        for block in body.blocks() {
            match block.identifier() {
                "variable" => {
                    let label = block.labels().first().map(|l| l.as_str().to_owned());
                    let label = label.unwrap_or_else(|| panic!("{name}: variable without a name"));
                    assert!(
                        analysis
                            .variables
                            .insert(label.clone(), block.body().clone())
                            .is_none(),
                        "{name}: variable `{label}` declared twice"
                    );
                    walk_body(
                        block.body(),
                        &format!("{name}: variable {label}"),
                        None,
                        &mut analysis,
                    );
                }
                "locals" => {
                    for attr in block.body().attributes() {
                        assert!(
                            analysis.locals.insert(attr.key().to_owned()),
                            "{name}: local `{}` declared twice",
                            attr.key()
                        );
                    }
                    walk_body(
                        block.body(),
                        &format!("{name}: locals"),
                        None,
                        &mut analysis,
                    );
                }
                "packer" => analysis.packer_block_files.push(file.clone()),
                other => walk_block(block, &format!("{name}: {other}"), &mut analysis),
            }
        }
    }
    analysis
}

fn walk_block(block: &Block, context: &str, analysis: &mut Analysis) {
    let labels: Vec<&str> = block.labels().iter().map(|l| l.as_str()).collect();
    let context = format!("{context} {}", labels.join(" "));
    walk_body(block.body(), &context, Some(block), analysis);
}

fn walk_body(body: &Body, context: &str, block: Option<&Block>, analysis: &mut Analysis) {
    let is_file_provisioner = block.is_some_and(|b| {
        b.identifier() == "provisioner" && b.labels().first().is_some_and(|l| l.as_str() == "file")
    });
    let downloads = body.attributes().any(|a| {
        a.key() == "direction" && matches!(a.expr(), Expression::String(s) if s == "download")
    });
    for attr in body.attributes() {
        let key = attr.key();
        let expr = attr.expr();
        let here = format!("{context}: {key}");
        match key {
            "script" | "http_directory" => analysis.paths.push((here.clone(), expr.clone())),
            "source" if is_file_provisioner && !downloads => {
                analysis.paths.push((here.clone(), expr.clone()));
            }
            "scripts" | "cd_files" | "floppy_files" => match expr {
                Expression::Array(items) => {
                    for item in items {
                        analysis.paths.push((here.clone(), item.clone()));
                    }
                }
                other => panic!("{here}: expected a list of paths, got {other:?}"),
            },
            _ => {}
        }
        walk_expr(expr, &here, analysis);
    }
    for nested in body.blocks() {
        walk_block(
            nested,
            &format!("{context} > {}", nested.identifier()),
            analysis,
        );
    }
}

fn walk_expr(expr: &Expression, context: &str, analysis: &mut Analysis) {
    match expr {
        Expression::Traversal(traversal) => {
            if let (Expression::Variable(root), Some(TraversalOperator::GetAttr(attr))) =
                (&traversal.expr, traversal.operators.first())
            {
                match root.as_str() {
                    "var" => {
                        analysis.used_vars.insert(attr.as_str().to_owned());
                    }
                    "local" => {
                        analysis.used_locals.insert(attr.as_str().to_owned());
                    }
                    _ => {}
                }
            }
            walk_expr(&traversal.expr, context, analysis);
            for op in &traversal.operators {
                if let TraversalOperator::Index(index) = op {
                    walk_expr(index, context, analysis);
                }
            }
        }
        Expression::TemplateExpr(template) => {
            let template = parse_template_expr(template, context);
            walk_template(&template, context, analysis);
        }
        Expression::Array(items) => {
            for item in items {
                walk_expr(item, context, analysis);
            }
        }
        Expression::Object(object) => {
            for (key, value) in object.iter() {
                if let ObjectKey::Expression(key) = key {
                    walk_expr(key, context, analysis);
                }
                walk_expr(value, context, analysis);
            }
        }
        Expression::FuncCall(call) => {
            let name = call.name.name.as_str();
            if name == "file" || name == "templatefile" {
                let path = call
                    .args
                    .first()
                    .unwrap_or_else(|| panic!("{context}: {name}() without a path"));
                analysis
                    .paths
                    .push((format!("{context}: {name}()"), path.clone()));
                if name == "templatefile" {
                    analysis.templatefiles.push((
                        context.to_owned(),
                        path.clone(),
                        call.args.get(1).cloned(),
                    ));
                }
            }
            for arg in &call.args {
                walk_expr(arg, context, analysis);
            }
        }
        Expression::Parenthesis(inner) => walk_expr(inner, context, analysis),
        Expression::Conditional(cond) => {
            walk_expr(&cond.cond_expr, context, analysis);
            walk_expr(&cond.true_expr, context, analysis);
            walk_expr(&cond.false_expr, context, analysis);
        }
        Expression::Operation(op) => match op.as_ref() {
            Operation::Unary(unary) => walk_expr(&unary.expr, context, analysis),
            Operation::Binary(binary) => {
                walk_expr(&binary.lhs_expr, context, analysis);
                walk_expr(&binary.rhs_expr, context, analysis);
            }
        },
        Expression::ForExpr(for_expr) => {
            walk_expr(&for_expr.collection_expr, context, analysis);
            if let Some(key) = &for_expr.key_expr {
                walk_expr(key, context, analysis);
            }
            walk_expr(&for_expr.value_expr, context, analysis);
            if let Some(cond) = &for_expr.cond_expr {
                walk_expr(cond, context, analysis);
            }
        }
        _ => {}
    }
}

fn parse_template_expr(template: &TemplateExpr, context: &str) -> Template {
    Template::from_expr(template)
        .unwrap_or_else(|e| panic!("{context}: invalid template expression: {e}"))
}

fn walk_template(template: &Template, context: &str, analysis: &mut Analysis) {
    for element in template.elements() {
        match element {
            Element::Literal(_) => {}
            Element::Interpolation(interpolation) => {
                walk_expr(&interpolation.expr, context, analysis)
            }
            Element::Directive(directive) => match directive.as_ref() {
                Directive::If(if_directive) => {
                    walk_expr(&if_directive.cond_expr, context, analysis);
                    walk_template(&if_directive.true_template, context, analysis);
                    if let Some(false_template) = &if_directive.false_template {
                        walk_template(false_template, context, analysis);
                    }
                }
                Directive::For(for_directive) => {
                    walk_expr(&for_directive.collection_expr, context, analysis);
                    walk_template(&for_directive.template, context, analysis);
                }
            },
        }
    }
}

fn is_path_root(expr: &Expression) -> bool {
    matches!(expr, Expression::Traversal(t)
        if matches!(&t.expr, Expression::Variable(v) if v.as_str() == "path")
            && matches!(t.operators.as_slice(), [TraversalOperator::GetAttr(a)] if a.as_str() == "root"))
}

/// Evaluates a path expression: literal text plus `${path.root}`; anything else is an error.
fn eval_path(expr: &Expression, dir: &Path, context: &str) -> String {
    match expr {
        Expression::String(s) => s.clone(),
        Expression::TemplateExpr(template) => {
            let template = parse_template_expr(template, context);
            let mut out = String::new();
            for element in template.elements() {
                match element {
                    Element::Literal(literal) => out.push_str(literal),
                    Element::Interpolation(i) if is_path_root(&i.expr) => {
                        out.push_str(&dir.to_string_lossy());
                    }
                    other => panic!(
                        "{context}: path must be literal text and ${{path.root}}, got {other:?}"
                    ),
                }
            }
            out
        }
        other => panic!("{context}: path must be a string, got {other:?}"),
    }
}

/// Existing paths matching `pattern` (a `*` is only supported in the last component).
fn glob(pattern: &str) -> Vec<PathBuf> {
    let path = Path::new(pattern);
    let Some(name) = path.file_name().and_then(OsStr::to_str) else {
        return if path.exists() {
            vec![path.to_path_buf()]
        } else {
            vec![]
        };
    };
    if !name.contains('*') {
        return if path.exists() {
            vec![path.to_path_buf()]
        } else {
            vec![]
        };
    }
    let (prefix, suffix) = name.split_once('*').expect("contains *");
    let parent = path.parent().unwrap_or(Path::new("."));
    let Ok(entries) = fs::read_dir(parent) else {
        return vec![];
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
        })
        .collect()
}

fn variable_attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes().find(|a| a.key() == key).map(|a| a.expr())
}

/// Variables a template directory may leave without a default (everything else needs one).
fn required_variables(dir: &str) -> BTreeSet<&'static str> {
    let common = ["proxmox_url", "proxmox_username", "proxmox_token"];
    let specific: &[&str] = if dir.starts_with("windows") {
        &["winrm_password", "cloudbase_init_sha256"]
    } else {
        &["ssh_password", "ssh_password_hash"]
    };
    common.iter().chain(specific).copied().collect()
}

// ---------------------------------------------------------------------------------------------------------
// Packer HCL
// ---------------------------------------------------------------------------------------------------------

#[test]
fn hcl_every_variable_and_local_is_declared_and_used() {
    for name in TEMPLATE_DIRS {
        let dir = images_dir().join(name);
        let a = analyse_dir(&dir);
        let declared: BTreeSet<String> = a.variables.keys().cloned().collect();
        let undeclared: Vec<_> = a.used_vars.difference(&declared).collect();
        let unused: Vec<_> = declared.difference(&a.used_vars).collect();
        assert!(
            undeclared.is_empty(),
            "{name}: var.X used but not declared: {undeclared:?}"
        );
        assert!(
            unused.is_empty(),
            "{name}: variables declared but never used: {unused:?}"
        );
        let undeclared: Vec<_> = a.used_locals.difference(&a.locals).collect();
        let unused: Vec<_> = a.locals.difference(&a.used_locals).collect();
        assert!(
            undeclared.is_empty(),
            "{name}: local.X used but not declared: {undeclared:?}"
        );
        assert!(
            unused.is_empty(),
            "{name}: locals declared but never used: {unused:?}"
        );
    }
}

#[test]
fn hcl_variables_have_types_descriptions_defaults_and_sensitivity() {
    for name in TEMPLATE_DIRS {
        let a = analyse_dir(&images_dir().join(name));
        let mut without_default = BTreeSet::new();
        for (var, body) in &a.variables {
            assert!(
                variable_attr(body, "type").is_some(),
                "{name}: variable `{var}` has no type"
            );
            match variable_attr(body, "description") {
                Some(Expression::String(d)) if !d.trim().is_empty() => {}
                other => panic!("{name}: variable `{var}` needs a description, got {other:?}"),
            }
            if variable_attr(body, "default").is_none() {
                without_default.insert(var.as_str());
            }
            let secret = var
                .split('_')
                .any(|word| ["token", "password", "secret"].contains(&word))
                || var.ends_with("product_key");
            let sensitive = matches!(
                variable_attr(body, "sensitive"),
                Some(Expression::Bool(true))
            );
            assert_eq!(
                secret, sensitive,
                "{name}: variable `{var}`: secrets (and only secrets) must be `sensitive = true`"
            );
        }
        assert_eq!(
            without_default,
            required_variables(name),
            "{name}: only the credentials may lack a default"
        );

        let mut expected = vec![
            "proxmox_url",
            "proxmox_username",
            "proxmox_token",
            "proxmox_node",
            "insecure_skip_tls_verify",
            "iso_url",
            "iso_file",
            "iso_checksum",
            "iso_download_pve",
            "iso_storage_pool",
            "cores",
            "memory",
            "disk_size",
            "vm_storage_pool",
            "bridge",
            "runner_version",
            "runner_sha256",
            "template_name",
        ];
        if name.starts_with("ubuntu") {
            expected.extend(["ssh_password", "ssh_password_hash", "runner_user"]);
        } else {
            expected.extend(["winrm_password", "virtio_iso_file", "cloudbase_init_sha256"]);
        }
        for var in expected {
            assert!(
                a.variables.contains_key(var),
                "{name}: variable `{var}` is missing"
            );
        }
        // TLS verification is skipped only on request.
        let tls = &a.variables["insecure_skip_tls_verify"];
        assert!(
            matches!(variable_attr(tls, "default"), Some(Expression::Bool(false))),
            "{name}: insecure_skip_tls_verify must default to false"
        );
    }
}

#[test]
fn hcl_referenced_files_exist() {
    for name in TEMPLATE_DIRS {
        let dir = images_dir().join(name);
        let a = analyse_dir(&dir);
        assert!(!a.paths.is_empty(), "{name}: no file references found");
        for (context, expr) in &a.paths {
            let path = eval_path(expr, &dir, context);
            assert!(
                path.starts_with(&*dir.to_string_lossy()),
                "{name}: {context}: paths must start with ${{path.root}} (Packer resolves bare relative \
                 paths against the working directory), got {path}"
            );
            assert!(
                !glob(&path).is_empty(),
                "{name}: {context}: {path} does not exist"
            );
        }
    }
}

#[test]
fn hcl_templatefile_calls_pass_exactly_the_placeholders_used() {
    for name in TEMPLATE_DIRS {
        let dir = images_dir().join(name);
        let a = analyse_dir(&dir);
        assert!(
            !a.templatefiles.is_empty(),
            "{name}: expected templatefile() calls"
        );
        for (context, path, vars) in &a.templatefiles {
            let path = eval_path(path, &dir, context);
            let content = read(Path::new(&path));
            let template: Template = content
                .parse()
                .unwrap_or_else(|e| panic!("{path}: not a valid Packer template: {e}"));
            let mut used = BTreeSet::new();
            collect_template_variables(&template, &mut used);
            let passed: BTreeSet<String> = match vars {
                Some(Expression::Object(object)) => object
                    .keys()
                    .map(|key| match key {
                        ObjectKey::Identifier(id) => id.as_str().to_owned(),
                        ObjectKey::Expression(Expression::String(s)) => s.clone(),
                        other => panic!("{context}: unexpected templatefile key {other:?}"),
                    })
                    .collect(),
                other => {
                    panic!("{context}: templatefile() needs an object of variables, got {other:?}")
                }
            };
            assert_eq!(
                used, passed,
                "{context}: placeholders of {path} vs variables passed"
            );
        }
    }
}

fn collect_template_variables(template: &Template, out: &mut BTreeSet<String>) {
    for element in template.elements() {
        match element {
            Element::Literal(_) => {}
            Element::Interpolation(i) => match &i.expr {
                Expression::Variable(v) => {
                    out.insert(v.as_str().to_owned());
                }
                other => panic!("template interpolations must be plain names, got {other:?}"),
            },
            Element::Directive(_) => panic!("template directives are not used in images/"),
        }
    }
}

#[test]
fn hcl_required_plugins_live_alone_in_their_own_file() {
    for name in TEMPLATE_DIRS {
        let dir = images_dir().join(name);
        let a = analyse_dir(&dir);
        assert_eq!(
            a.packer_block_files.len(),
            1,
            "{name}: exactly one file holds the packer block"
        );
        let file = &a.packer_block_files[0];
        let body = parse_hcl(file);
        assert_eq!(
            body.iter().count(),
            1,
            "{}: must hold only the packer block (Packer 1.6 cannot validate it)",
            file.display()
        );
        let packer = body.blocks().next().expect("packer block");
        let plugins = packer
            .body()
            .blocks()
            .find(|b| b.identifier() == "required_plugins")
            .unwrap_or_else(|| panic!("{name}: no required_plugins"));
        let proxmox = plugins
            .body()
            .attributes()
            .find(|a| a.key() == "proxmox")
            .unwrap_or_else(|| panic!("{name}: required_plugins has no proxmox"));
        let Expression::Object(object) = proxmox.expr() else {
            panic!("{name}: required_plugins.proxmox must be an object");
        };
        let field = |k: &str| {
            object.iter().find_map(|(key, value)| match (key, value) {
                (ObjectKey::Identifier(id), Expression::String(s)) if id.as_str() == k => {
                    Some(s.clone())
                }
                _ => None,
            })
        };
        assert_eq!(
            field("version").as_deref(),
            Some("~> 1.2"),
            "{name}: plugin version pin"
        );
        assert_eq!(
            field("source").as_deref(),
            Some("github.com/hashicorp/proxmox"),
            "{name}: plugin source"
        );
    }
}

#[test]
fn hcl_example_pkrvars_only_set_declared_variables() {
    for name in TEMPLATE_DIRS {
        let dir = images_dir().join(name);
        let a = analyse_dir(&dir);
        let vars = parse_hcl(&dir.join("packer.pkrvars.hcl"));
        assert!(
            vars.blocks().next().is_none(),
            "{name}: packer.pkrvars.hcl holds only assignments"
        );
        for attr in vars.attributes() {
            assert!(
                a.variables.contains_key(attr.key()),
                "{name}: packer.pkrvars.hcl sets undeclared variable `{}`",
                attr.key()
            );
        }
    }
    let gitignore = read(&images_dir().join(".gitignore"));
    assert!(gitignore.lines().any(|l| l.trim() == "*.auto.pkrvars.hcl"));
}

#[test]
fn ubuntu_templates_stay_in_sync() {
    let root = images_dir();
    for file in [
        "plugins.pkr.hcl",
        "ubuntu-runner.pkr.hcl",
        "http/user-data",
        "http/meta-data",
        "cloud-init/runner-user-data.pkrtpl",
    ] {
        assert_eq!(
            read(&root.join("ubuntu-2404").join(file)),
            read(&root.join("ubuntu-2204").join(file)),
            "{file} differs between ubuntu-2404 and ubuntu-2204"
        );
    }
    let names = |dir: &str| -> BTreeSet<String> {
        analyse_dir(&root.join(dir)).variables.into_keys().collect()
    };
    assert_eq!(names("ubuntu-2404"), names("ubuntu-2204"));

    // packer-build.sh looks for the ISO named by the template's default iso_url.
    for dir in UBUNTU_DIRS {
        let a = analyse_dir(&root.join(dir));
        let Some(Expression::String(url)) = variable_attr(&a.variables["iso_url"], "default")
        else {
            panic!("{dir}: iso_url needs a string default");
        };
        let script = read(&root.join(dir).join("packer-build.sh"));
        assert!(
            script.contains(&format!("ISO_URL:-{url}}}")),
            "{dir}/packer-build.sh must default to the same ISO URL as variables.pkr.hcl ({url})"
        );
        assert!(url.contains(dir.trim_start_matches("ubuntu-").split_at(2).0));
    }
}

// ---------------------------------------------------------------------------------------------------------
// Guest contract (images/guest-contract.md) — the template side
// ---------------------------------------------------------------------------------------------------------

#[test]
fn guest_files_implement_the_contract() {
    let root = images_dir();
    let contract = read(&root.join("guest-contract.md"));
    for needle in [
        "/var/lib/actions-runner-jit/jitconfig",
        "actions-runner-jit.path",
        "actions-runner-jit.service",
        "/opt/actions-runner/run-jit.sh",
        "/opt/actions-runner/run-once.sh",
        "ActionsRunnerJit",
        r"C:\ProgramData\actions-runner-jit\jitconfig",
        r"C:\ProgramData\actions-runner-jit\run-jit.ps1",
    ] {
        assert!(
            contract.contains(needle),
            "guest-contract.md no longer mentions {needle}"
        );
    }

    let files = root.join("ubuntu-common/files");
    let path_unit = read(&files.join("actions-runner-jit.path"));
    assert!(path_unit.contains("PathExists=/var/lib/actions-runner-jit/jitconfig"));
    assert!(path_unit.contains("Unit=actions-runner-jit.service"));
    assert!(path_unit.contains("WantedBy=paths.target"));
    let service = read(&files.join("actions-runner-jit.service"));
    assert!(service.contains("ExecStart=/opt/actions-runner/run-jit.sh"));
    assert!(
        service.contains(
            "ExecStopPost=/bin/systemctl start --no-block actions-runner-poweroff.service"
        )
    );
    let poweroff = read(&files.join("actions-runner-poweroff.service"));
    assert!(poweroff.contains("After=cloud-final.service"));
    assert!(poweroff.contains("ExecStart=/bin/systemctl poweroff --no-block"));
    assert!(poweroff.contains("JobTimeoutAction=poweroff"));
    assert!(
        !service.contains("[Install]"),
        "the service must only be started by the path unit"
    );

    let scripts = root.join("ubuntu-common/scripts");
    let units = read(&scripts.join("40-runner-units.sh"));
    assert!(units.contains("systemctl enable actions-runner-jit.path"));
    assert!(units.contains("install -d -m 0700 -o root -g root /var/lib/actions-runner-jit"));
    assert!(
        units.contains("\"$runner_dir/run-jit.sh\"")
            && units.contains("\"$runner_dir/run-once.sh\"")
            && units.contains("\"$runner_dir/scrub-cloud-init.sh\"")
    );
    assert!(units.contains("/etc/systemd/system/actions-runner-poweroff.service"));

    let netplan = read(&files.join("90-runner-dhcp.yaml"));
    assert!(netplan.contains("name: \"e*\"") && netplan.contains("dhcp4: true"));
    let cleanup = read(&scripts.join("90-cleanup.sh"));
    for needle in [
        "cloud-init clean --logs",
        "truncate -s 0 /etc/machine-id",
        "rm -f /var/lib/dbus/machine-id",
        "rm -f /etc/ssh/ssh_host_*",
        "passwd --lock",
    ] {
        assert!(
            cleanup.contains(needle),
            "90-cleanup.sh must run `{needle}`"
        );
    }

    let win = root.join("windows-2022");
    // The task runs the runner as the dedicated local user ghrunner, never as SYSTEM (issue 15, item 13);
    // windows_runner_task_runs_as_the_dedicated_user_not_system checks the same on the parsed scripts.
    let setup = read(&win.join("files/setup-runner-account.ps1"));
    assert!(setup.contains("$userName = 'ghrunner'"));
    assert!(setup.contains("$taskName = 'ActionsRunnerJit'"));
    assert!(setup.contains("Register-ScheduledTask -TaskName $taskName"));
    assert!(setup.contains("New-ScheduledTaskTrigger -AtStartup"));
    assert!(
        setup.contains(
            "New-ScheduledTaskPrincipal -UserId $userName -LogonType S4U -RunLevel Limited"
        )
    );
    assert!(setup.contains("$password = New-RandomPassword"));
    assert!(
        setup.contains("[Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($bytes)")
    );
    assert!(setup.contains("New-LocalUser -Name $userName -Password $password"));
    assert!(setup.contains("Add-LocalGroupMember -SID 'S-1-5-32-545' -Member $sid"));
    assert!(setup.contains("Remove-LocalGroupMember -SID 'S-1-5-32-544' -Member $sid"));
    assert!(setup.contains("'/grant:r', \"${system}:(OI)(CI)F\", \"*${sid}:(OI)(CI)M\""));
    for script in files_with_suffix(&win, ".ps1") {
        let text = read(&script);
        for bad in [
            "'SYSTEM'",
            "ServiceAccount",
            "RunLevel Highest",
            "NT AUTHORITY",
        ] {
            assert!(
                !text.contains(bad),
                "{} mentions {bad}: the runner must not run as SYSTEM",
                script.display()
            );
        }
    }
    let task = read(&win.join("scripts/install-jit-task.ps1"));
    assert!(task.contains("Setup\\Scripts") && task.contains("'SetupComplete.cmd'"));
    assert!(task.contains("-File `\"$setupScript`\" -StartTask"));
    assert!(task.contains("& $setupScript"));
    assert!(contract.contains("`ghrunner`") && contract.contains("not SYSTEM"));
    let run_jit = read(&win.join("files/run-jit.ps1"));
    assert!(run_jit.contains(r"$jitDir = 'C:\ProgramData\actions-runner-jit'"));
    assert!(run_jit.contains("Join-Path $jitDir 'jitconfig'"));
    assert!(run_jit.contains("$runnerDir = 'C:\\actions-runner'"));
    assert!(run_jit.contains("Remove-Item -LiteralPath $jitFile -Force"));
    assert!(run_jit.contains("shutdown.exe /s /t 0 /f"));
    let finalize = read(&win.join("scripts/finalize.ps1"));
    assert!(finalize.contains("Set-Service -Name 'WinRM' -StartupType Disabled"));
    assert!(finalize.contains("'/generalize'") && finalize.contains("Unattend.xml"));
    let conf = read(&win.join("files/cloudbase-init.conf"));
    assert!(conf.contains("ConfigDriveService") && conf.contains("NoCloudConfigDriveService"));
    assert!(conf.contains("UserDataPlugin"));
}

// ---------------------------------------------------------------------------------------------------------
// Validators
// ---------------------------------------------------------------------------------------------------------

#[test]
fn shellcheck_passes_on_every_shell_script() {
    let Some(shellcheck) = require_tool("shellcheck") else {
        return;
    };
    let mut scripts = files_with_suffix(&images_dir(), ".sh");
    assert!(
        scripts.len() >= 12,
        "expected the images' shell scripts, found {scripts:?}"
    );
    // The guest boot test's scripts and the runner stand-in it installs in the image.
    let guest = files_with_suffix(&images_dir().join("../tests/guest"), ".sh");
    assert!(
        guest.len() >= 5,
        "expected tests/guest's shell scripts, found {guest:?}"
    );
    scripts.extend(guest);
    for script in &scripts {
        let first = read(script).lines().next().unwrap_or_default().to_owned();
        assert!(
            first == "#!/usr/bin/env bash" || first == "# shellcheck shell=bash",
            "{}: must start with a bash shebang (or a shellcheck shell directive if sourced)",
            script.display()
        );
    }
    let output = run(Command::new(shellcheck)
        .arg("--external-sources")
        .args(&scripts));
    assert!(output.status.success(), "shellcheck:\n{}", text(&output));
}

#[test]
fn cloud_init_schema_accepts_the_autoinstall_user_data() {
    let Some(cloud_init) = require_tool("cloud-init") else {
        return;
    };
    let python = cloud_init_python(&cloud_init);
    for dir in UBUNTU_DIRS {
        let template = read(&images_dir().join(dir).join("http/user-data"));
        let rendered = render_packer_template(
            &template,
            &[
                ("hostname", "packer-test"),
                ("runner_user", "ci"),
                ("ssh_password_hash", "$6$salt$hash/with.dots"),
            ],
        );
        // Debian's cloud-init 22.4 validates the top level of the file but does not know the `autoinstall`
        // key (subiquity's schema), so the parts that matter are checked below, and the cloud-config that
        // the installer hands to the installed system (`autoinstall.user-data`) is validated on its own.
        cloud_init_schema(&cloud_init, "user-data", &rendered);
        let doc = yaml_to_json(&python, &rendered);
        let ai = &doc["autoinstall"];
        assert_eq!(ai["version"], 1, "{dir}: autoinstall version");
        assert_eq!(ai["identity"]["username"], "ci", "{dir}: identity.username");
        assert_eq!(
            ai["identity"]["password"], "$6$salt$hash/with.dots",
            "{dir}: password hash"
        );
        assert_eq!(ai["identity"]["hostname"], "packer-test");
        assert_eq!(
            ai["ssh"]["install-server"], true,
            "{dir}: Packer needs sshd"
        );
        let nics = ai["network"]["ethernets"]
            .as_object()
            .expect("network.ethernets");
        assert!(
            nics.values()
                .any(|n| n["match"]["name"] == "e*" && n["dhcp4"] == true),
            "{dir}: the installer network must DHCP on any e* NIC"
        );
        let packages = ai["packages"].as_array().expect("packages");
        assert!(
            packages.iter().any(|p| p == "qemu-guest-agent"),
            "{dir}: Packer finds the IP via the agent"
        );
        let late = ai["late-commands"].to_string();
        assert!(
            late.contains("/target/etc/sudoers.d/90-packer-build"),
            "{dir}: build sudo rule"
        );
        let inner = serde_json::to_string_pretty(&ai["user-data"]).expect("json");
        cloud_init_schema(
            &cloud_init,
            "installed-user-data",
            &format!("#cloud-config\n{inner}\n"),
        );
    }
}

#[test]
fn cloud_init_schema_accepts_the_rendered_runner_user_data() {
    let Some(cloud_init) = require_tool("cloud-init") else {
        return;
    };
    let python = cloud_init_python(&cloud_init);
    let token = "AABBCCDDEEFFGG0123456789TOKEN";
    let values = BTreeMap::from([
        ("runner_name", "ubuntu-2404-runner-1234"),
        ("runner_user", "ci"),
        ("repo_url", "https://github.com/NREL/EnergyPlus"),
        ("registration_token", token),
        ("runner_labels", "self-hosted,linux,x64,ubuntu-2404"),
    ]);
    for dir in UBUNTU_DIRS {
        let path = images_dir()
            .join(dir)
            .join("cloud-init/runner-user-data.pkrtpl");
        let rendered = render_python_template(&read(&path), &values)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(rendered.starts_with("#cloud-config\n"));
        cloud_init_schema(&cloud_init, "runner-user-data", &rendered);

        let doc = yaml_to_json(&python, &rendered);
        assert_eq!(doc["hostname"], "ubuntu-2404-runner-1234");
        let runcmd = doc["runcmd"].to_string();
        assert!(
            !runcmd.contains(token),
            "{dir}: the registration token must not be in runcmd"
        );
        assert!(
            runcmd.contains("/opt/actions-runner/run-once.sh"),
            "{dir}: runcmd calls run-once.sh"
        );
        assert!(runcmd.contains("@/var/lib/actions-runner-jit/registration-token"));
        assert!(runcmd.contains("RUNNER_USER=ci"));
        let files = doc["write_files"].as_array().expect("write_files");
        let token_file = files
            .iter()
            .find(|f| f["path"] == "/var/lib/actions-runner-jit/registration-token")
            .expect("write_files entry for the token");
        assert_eq!(token_file["permissions"], "0600");
        assert_eq!(token_file["owner"], "root:root");
        assert_eq!(token_file["content"].as_str().map(str::trim), Some(token));
        assert_eq!(doc["power_state"]["mode"], "poweroff");
        // Exactly one occurrence: the write_files content (never in a comment or elsewhere).
        assert_eq!(
            rendered.matches(token).count(),
            1,
            "{dir}: token must appear only in write_files"
        );
    }
    assert!(
        render_python_template("$nope", &values).is_err(),
        "the renderer rejects unknown names"
    );
}

#[test]
fn xmllint_accepts_autounattend_and_the_settings_that_matter() {
    let Some(xmllint) = require_tool("xmllint") else {
        return;
    };
    let path = images_dir().join("windows-2022/Autounattend.xml");
    let raw = read(&path);
    let output = run(Command::new(&xmllint).arg("--noout").arg(&path));
    assert!(
        output.status.success(),
        "xmllint (template): {}",
        text(&output)
    );

    let password = "S3cret&<pw>";
    let escaped = "S3cret&amp;&lt;pw&gt;";
    let rendered = render_packer_template(
        &raw,
        &[
            ("winrm_password_xml", escaped),
            ("windows_image_name", "Windows Server 2022 SERVERSTANDARD"),
            ("windows_product_key", ""),
        ],
    );
    let dir = temp_dir();
    let file = dir.path().join("Autounattend.xml");
    write(&file, &rendered);
    let output = run(Command::new(&xmllint).arg("--noout").arg(&file));
    assert!(
        output.status.success(),
        "xmllint (rendered): {}",
        text(&output)
    );

    let xpath = |expr: &str| -> String {
        let output = run(Command::new(&xmllint).arg("--xpath").arg(expr).arg(&file));
        assert!(
            output.status.success(),
            "xmllint --xpath {expr}: {}",
            text(&output)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let el = |name: &str| format!("*[local-name()='{name}']");
    let pass = |name: &str| format!("//{}[@pass='{name}']", el("settings"));

    // virtio drivers for Setup: vioscsi (the disk) and NetKVM (the NIC) for Server 2022, on any CD letter.
    let driver_paths = |driver: &str| {
        xpath(&format!(
            "count({}//{}/{}[contains(., '\\{driver}\\2k22\\amd64')])",
            pass("windowsPE"),
            el("PathAndCredentials"),
            el("Path")
        ))
    };
    assert_eq!(driver_paths("vioscsi"), "4");
    assert_eq!(driver_paths("NetKVM"), "4");
    assert_eq!(
        xpath(&format!(
            "string(//{}/{}/{}/{})",
            el("InstallFrom"),
            el("MetaData"),
            el("Value"),
            "text()"
        )),
        "Windows Server 2022 SERVERSTANDARD"
    );
    // The Administrator password comes from the placeholder (XML-escaped by the template's local).
    assert!(raw.contains("<Value>${winrm_password_xml}</Value>"));
    let admin = xpath(&format!(
        "string({}//{}/{}/{})",
        pass("oobeSystem"),
        el("AdministratorPassword"),
        el("Value"),
        "text()"
    ));
    assert_eq!(admin, password);
    assert_eq!(
        xpath(&format!(
            "string({}//{}/{})",
            pass("oobeSystem"),
            el("AutoLogon"),
            el("Username")
        )),
        "Administrator"
    );
    assert_eq!(
        xpath(&format!(
            "string({}//{}/{})",
            pass("oobeSystem"),
            el("AutoLogon"),
            el("LogonCount")
        )),
        "1"
    );
    // The first logon enables WinRM (for the build only) with the script from the Autounattend CD.
    let first_logon = xpath(&format!(
        "string({}//{}/{}/{})",
        pass("oobeSystem"),
        el("FirstLogonCommands"),
        el("SynchronousCommand"),
        el("CommandLine")
    ));
    assert!(
        first_logon.contains("bootstrap-winrm.ps1"),
        "first logon command: {first_logon}"
    );
    let bootstrap = read(&images_dir().join("windows-2022/scripts/bootstrap-winrm.ps1"));
    assert!(bootstrap.contains("Enable-PSRemoting") && bootstrap.contains("qemu-ga-x86_64.msi"));
    assert!(bootstrap.contains("virtio-win-gt-x64.msi"));
}

#[test]
fn systemd_analyze_verifies_the_runner_units() {
    let Some(analyze) = require_tool("systemd-analyze") else {
        return;
    };
    let files = images_dir().join("ubuntu-common/files");
    let dir = temp_dir();
    // `verify` needs ExecStart= binaries to exist: point them at a stub in the temp dir.
    let stub = dir.path().join("run-jit.sh");
    write(&stub, "#!/bin/sh\nexit 0\n");
    chmod(&stub, 0o755);
    let mut units = Vec::new();
    for unit in [
        "actions-runner-jit.path",
        "actions-runner-jit.service",
        "actions-runner-poweroff.service",
    ] {
        let content = read(&files.join(unit))
            .replace("/opt/actions-runner/run-jit.sh", &stub.to_string_lossy());
        let target = dir.path().join(unit);
        write(&target, &content);
        units.push(target);
    }
    let output = run(Command::new(analyze)
        .args(["verify", "--man=no"])
        .args(&units));
    let out = text(&output);
    // systemd-analyze returns 0 on warnings: any output is a failure.
    assert!(
        output.status.success() && out.trim().is_empty(),
        "systemd-analyze verify:\n{out}"
    );
}

#[test]
fn packer_fmt_and_syntax_only_validate_pass() {
    let Some(packer) = require_tool("packer") else {
        return;
    };
    for name in TEMPLATE_DIRS {
        let dir = images_dir().join(name);
        let output = run(Command::new(&packer)
            .args(["fmt", "-check", "-diff"])
            .arg(&dir));
        assert!(
            output.status.success(),
            "packer fmt -check {name}:\n{}",
            text(&output)
        );
        let output = run(Command::new(&packer)
            .args(["fmt", "-check", "-diff"])
            .arg(dir.join("packer.pkrvars.hcl")));
        assert!(
            output.status.success(),
            "packer fmt -check {name}/packer.pkrvars.hcl:\n{}",
            text(&output)
        );

        // Debian's packer 1.6.6 rejects `required_plugins`, so validate a copy of the directory without the
        // file that holds the packer block (hcl_required_plugins_live_alone_in_their_own_file checks that
        // this file holds nothing else). With the example var file, undeclared variables give a warning.
        let copy = temp_dir();
        let analysis = analyse_dir(&dir);
        for file in hcl_files(&dir) {
            if !analysis.packer_block_files.contains(&file) {
                fs::copy(
                    &file,
                    copy.path().join(file.file_name().expect("file name")),
                )
                .expect("copy");
            }
        }
        let output = run(Command::new(&packer)
            .args(["validate", "-syntax-only"])
            .arg(format!(
                "-var-file={}",
                dir.join("packer.pkrvars.hcl").display()
            ))
            .arg(copy.path()));
        let out = text(&output);
        assert!(
            output.status.success() && !out.contains("Warning") && !out.contains("Error"),
            "packer validate -syntax-only {name}:\n{out}"
        );
    }
}

/// Parses every file given on the command line with tree-sitter-powershell; prints each syntax error.
const POWERSHELL_CHECK: &str = r#"
import sys
import tree_sitter, tree_sitter_powershell
parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
bad = 0
def walk(node, path, src):
    global bad
    if node.is_error or node.is_missing:
        bad += 1
        text = src[node.start_byte:node.end_byte][:80]
        print(f"{path}:{node.start_point[0] + 1}:{node.start_point[1] + 1}: syntax error near {text!r}")
        return
    for child in node.children:
        walk(child, path, src)
for path in sys.argv[1:]:
    src = open(path, "rb").read()
    tree = parser.parse(src)
    if tree.root_node.has_error:
        before = bad
        walk(tree.root_node, path, src)
        if bad == before:
            bad += 1
            print(f"{path}: syntax error")
sys.exit(1 if bad else 0)
"#;

#[test]
fn powershell_scripts_parse() {
    // IMAGES_PS_PYTHON: a Python with the PyPI packages tree-sitter and tree-sitter-powershell.
    let python = std::env::var("IMAGES_PS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let probe = Command::new(&python)
        .args(["-c", "import tree_sitter, tree_sitter_powershell"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            !in_ci(),
            "CI is set but `{python}` cannot import tree_sitter + tree_sitter_powershell \
             (pip install tree-sitter tree-sitter-powershell, or set IMAGES_PS_PYTHON)"
        );
        eprintln!("SKIPPED: no tree-sitter-powershell for `{python}` (set IMAGES_PS_PYTHON)");
        return;
    }
    let scripts = files_with_suffix(&images_dir(), ".ps1");
    assert!(
        scripts.len() >= 6,
        "expected the Windows scripts, found {scripts:?}"
    );
    let output = run(Command::new(&python)
        .args(["-c", POWERSHELL_CHECK])
        .args(&scripts));
    assert!(
        output.status.success(),
        "PowerShell syntax:\n{}",
        text(&output)
    );

    // The checker does find errors.
    let dir = temp_dir();
    let broken = dir.path().join("broken.ps1");
    write(&broken, "function f { $x = (1 + \n");
    let output = run(Command::new(&python)
        .args(["-c", POWERSHELL_CHECK])
        .arg(&broken));
    assert!(!output.status.success(), "a broken script must be reported");
}

/// Prints, as JSON, every command of the files given (name, `-parameter` → value text, positional arguments) and
/// every variable reference with the command it is an argument of (and that parameter), `assign-lhs` /
/// `assign-rhs` outside commands, parsed with tree-sitter-powershell.
const POWERSHELL_COMMANDS: &str = r#"
import json, sys
import tree_sitter, tree_sitter_powershell
parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
out = {"commands": [], "variables": []}
def text(n, src):
    return src[n.start_byte:n.end_byte].decode("utf-8", "replace")
def enclosing_command(n):
    while n is not None and n.type != "command":
        n = n.parent
    return n
def command_name(cmd, src):
    for c in cmd.children:
        if c.type == "command_name":
            return text(c, src)
        if c.type == "command_name_expr":
            return text(c, src)
    return ""
def walk(n, path, src):
    if n.type == "command":
        name = command_name(n, src)
        params, args, current = {}, [], None
        for el in n.children:
            if el.type != "command_elements":
                continue
            for c in el.children:
                if c.type == "command_argument_sep":
                    continue
                if c.type == "command_parameter":
                    current = text(c, src).lstrip("-").rstrip(":").lower()
                    params[current] = True
                elif current is not None:
                    params[current] = text(c, src)
                    current = None
                else:
                    args.append(text(c, src))
        out["commands"].append({"file": path, "line": n.start_point[0] + 1, "name": name, "params": params, "args": args})
    if n.type == "variable":
        cmd = enclosing_command(n)
        ctx, param = "", ""
        if cmd is not None:
            ctx = command_name(cmd, src)
            # the parameter this variable is the value of
            prev = None
            node = n
            while node.parent is not None and node.parent.type != "command_elements":
                node = node.parent
            if node.parent is not None:
                sibs = [c for c in node.parent.children if c.type != "command_argument_sep"]
                i = [s.id for s in sibs].index(node.id)
                if i > 0 and sibs[i - 1].type == "command_parameter":
                    param = text(sibs[i - 1], src).lstrip("-").rstrip(":").lower()
        else:
            p = n.parent
            while p is not None and p.type not in ("assignment_expression", "statement_list"):
                p = p.parent
            if p is not None and p.type == "assignment_expression":
                lhs = p.children[0]
                ctx = "assign-lhs" if lhs.start_byte <= n.start_byte < lhs.end_byte else "assign-rhs"
        out["variables"].append({"file": path, "line": n.start_point[0] + 1, "name": text(n, src).lower(), "command": ctx, "param": param})
    for c in n.children:
        walk(c, path, src)
for path in sys.argv[1:]:
    src = open(path, "rb").read()
    walk(parser.parse(src).root_node, path, src)
json.dump(out, sys.stdout)
"#;

/// The commands and variable references of the Windows scripts (see [`POWERSHELL_COMMANDS`]); `None` (skip)
/// without tree-sitter-powershell, unless `CI` is set.
fn powershell_ast(scripts: &[PathBuf]) -> Option<serde_json::Value> {
    let python = std::env::var("IMAGES_PS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let probe = Command::new(&python)
        .args(["-c", "import tree_sitter, tree_sitter_powershell"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            !in_ci(),
            "CI is set but `{python}` cannot import tree_sitter + tree_sitter_powershell"
        );
        eprintln!("SKIPPED: no tree-sitter-powershell for `{python}` (set IMAGES_PS_PYTHON)");
        return None;
    }
    let output = run(Command::new(&python)
        .args(["-c", POWERSHELL_COMMANDS])
        .args(scripts));
    assert!(output.status.success(), "{}", text(&output));
    Some(serde_json::from_slice(&output.stdout).expect("JSON from the PowerShell walker"))
}

#[test]
fn windows_runner_task_runs_as_the_dedicated_user_not_system() {
    let win = images_dir().join("windows-2022");
    let scripts = files_with_suffix(&win, ".ps1");
    let Some(ast) = powershell_ast(&scripts) else {
        return;
    };
    let commands = ast["commands"].as_array().expect("commands");
    let named = |name: &str| -> Vec<&serde_json::Value> {
        commands
            .iter()
            .filter(|c| {
                c["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .collect()
    };
    let param = |c: &serde_json::Value, p: &str| -> String {
        match &c["params"][p] {
            serde_json::Value::String(s) => s.trim_matches(['\'', '"']).to_owned(),
            serde_json::Value::Bool(true) => "(switch)".to_owned(),
            _ => String::new(),
        }
    };
    let setup = win.join("files/setup-runner-account.ps1");
    let in_setup = |c: &serde_json::Value| c["file"].as_str() == setup.to_str();

    // Exactly one task principal in all the Windows scripts: the user, S4U, not elevated. No task is
    // registered without it (no -User SYSTEM), and none as a service account.
    let principals = named("New-ScheduledTaskPrincipal");
    assert_eq!(principals.len(), 1, "{principals:?}");
    let principal = principals[0];
    assert!(in_setup(principal), "{principal}");
    assert_eq!(param(principal, "userid"), "$userName");
    assert_eq!(param(principal, "logontype"), "S4U");
    assert_eq!(param(principal, "runlevel"), "Limited");
    assert!(param(principal, "groupid").is_empty());
    let registrations = named("Register-ScheduledTask");
    assert_eq!(registrations.len(), 1, "{registrations:?}");
    let register = registrations[0];
    assert_eq!(param(register, "taskname"), "$taskName");
    assert_eq!(param(register, "principal"), "$principal");
    for p in ["user", "password", "runlevel"] {
        assert!(param(register, p).is_empty(), "Register-ScheduledTask -{p}");
    }
    let setup_text = read(&setup);
    assert!(setup_text.contains("\n$userName = 'ghrunner'\n"));
    assert!(setup_text.contains("\n$taskName = 'ActionsRunnerJit'\n"));
    let trigger = named("New-ScheduledTaskTrigger");
    assert!(trigger.len() == 1 && param(trigger[0], "atstartup") == "(switch)");

    // The user is created by the image, with the random password and in Users only.
    let created = named("New-LocalUser");
    assert_eq!(created.len(), 1);
    assert!(in_setup(created[0]));
    assert_eq!(param(created[0], "name"), "$userName");
    assert_eq!(param(created[0], "password"), "$password");
    for c in named("Add-LocalGroupMember") {
        assert_eq!(param(c, "sid"), "S-1-5-32-545", "only Users: {c}");
    }
    let removed = named("Remove-LocalGroupMember");
    assert!(removed.iter().any(|c| param(c, "sid") == "S-1-5-32-544"));
    assert!(setup_text.contains("$password = New-RandomPassword"));

    // The password never leaves memory: it is only handed to New-LocalUser/Set-LocalUser -Password; its
    // random bytes only to ConvertTo-SecureString (and their own methods).
    let variables = ast["variables"].as_array().expect("variables");
    for v in variables.iter().filter(|v| in_setup(v)) {
        let name = v["name"].as_str().unwrap_or("");
        let command = v["command"].as_str().unwrap_or("");
        let p = v["param"].as_str().unwrap_or("");
        let allowed = match name {
            "$password" => {
                command == "assign-lhs"
                    || (["New-LocalUser", "Set-LocalUser"].contains(&command) && p == "password")
            }
            "$bytes" => {
                ["assign-lhs", ""].contains(&command)
                    || (command == "ConvertTo-SecureString" && p == "string")
            }
            _ => true,
        };
        assert!(allowed, "{name} used by {command} -{p}: {v}");
    }
    let uses = |name: &str| {
        variables
            .iter()
            .filter(|v| in_setup(v) && v["name"] == name)
            .count()
    };
    assert_eq!(
        uses("$password"),
        3,
        "assigned, then New-LocalUser or Set-LocalUser"
    );
    assert!(uses("$bytes") >= 4);

    // The JIT directory: SYSTEM and the user only; run-jit.ps1 read-only for the user.
    let icacls: Vec<String> = named("Invoke-Native")
        .iter()
        .filter(|c| in_setup(c))
        .filter_map(|c| {
            let args = c["args"].as_array()?;
            (args.first()?.as_str()? == "'icacls.exe'")
                .then(|| args[1].as_str().unwrap_or("").to_owned())
        })
        .collect();
    assert!(
        icacls.contains(&r#"@($jitDir, '/inheritance:r', '/grant:r', "${system}:(OI)(CI)F", "*${sid}:(OI)(CI)M")"#.to_owned()),
        "{icacls:?}"
    );
    assert!(
        icacls.contains(
            &r#"@($script, '/inheritance:r', '/grant:r', "${system}:F", "*${sid}:RX")"#.to_owned()
        ),
        "{icacls:?}"
    );
    assert!(
        !icacls
            .iter()
            .any(|a| a.contains("$jitDir") && a.contains("/grant") && a.contains("S-1-5-32-544")),
        "Administrators on the JIT directory: {icacls:?}"
    );
}

// ---------------------------------------------------------------------------------------------------------
// Behaviour of the guest scripts and packer-build.sh, with stubs
// ---------------------------------------------------------------------------------------------------------

/// The user the scripts hand the runner to: `nobody` when the tests run as root (CI), else ourselves.
fn runner_user() -> String {
    let id = |flag: &str| {
        let output = run(Command::new("id").arg(flag));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    if id("-u") == "0" {
        "nobody".to_owned()
    } else {
        id("-un")
    }
}

/// A world-readable sandbox with an `out/` dir every user may write to.
fn sandbox() -> (tempfile::TempDir, PathBuf) {
    let dir = temp_dir();
    chmod(dir.path(), 0o755);
    let out = dir.path().join("out");
    fs::create_dir(&out).expect("out dir");
    chmod(&out, 0o777);
    (dir, out)
}

fn stub(path: &Path, body: &str) {
    write(path, &format!("#!/usr/bin/env bash\n{body}"));
    chmod(path, 0o755);
}

/// cloud-init's copies of the user-data, in a sandbox (`scrub-cloud-init.sh` is pointed at it): the files the
/// guest boot test found holding the credential, a `status.json` whose final stage has started, and a log.
struct CloudInitCopies {
    lib: PathBuf,
    run: PathBuf,
    copies: Vec<PathBuf>,
    kept: Vec<PathBuf>,
}

impl CloudInitCopies {
    fn new(dir: &Path, secret: &str) -> Self {
        let lib = dir.join("var-lib-cloud");
        let run = dir.join("run-cloud-init");
        let instance = lib.join("instances/iid-0123");
        fs::create_dir_all(&instance).expect("instance dir");
        fs::create_dir_all(&run).expect("run dir");
        let mut copies = Vec::new();
        for name in [
            "user-data.txt",
            "user-data.txt.i",
            "cloud-config.txt",
            "obj.pkl",
        ] {
            copies.push(instance.join(name));
        }
        for name in ["combined-cloud-config.json", "instance-data-sensitive.json"] {
            copies.push(run.join(name));
        }
        for copy in &copies {
            write(copy, &format!("#cloud-config\ncontent: {secret}\n"));
        }
        write(
            &run.join("status.json"),
            r#"{"v1": {"modules-final": {"start": 1700000000.5, "finished": null}, "stage": "modules-final"}}"#,
        );
        write(
            &dir.join("cloud-init.log"),
            "x - handlers.py[DEBUG]: finish: modules-final/check-cache: SUCCESS\n",
        );
        let kept = vec![run.join("status.json"), instance.join("sem")];
        fs::create_dir_all(instance.join("sem")).expect("sem dir");
        Self {
            lib,
            run,
            copies,
            kept,
        }
    }

    fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        let log = self.lib.parent().expect("sandbox").join("cloud-init.log");
        cmd.env("CLOUD_INIT_DIR", &self.lib)
            .env("CLOUD_INIT_RUN_DIR", &self.run)
            .env("CLOUD_INIT_LOG", log)
            .env("CLOUD_INIT_WAIT_SECONDS", "5")
    }

    fn assert_removed(&self, log: &str) {
        for copy in &self.copies {
            assert!(
                !copy.exists(),
                "{} must be removed before the runner starts:\n{log}",
                copy.display()
            );
        }
        for kept in &self.kept {
            assert!(kept.exists(), "{} must be left alone", kept.display());
        }
    }
}

#[test]
fn scrub_cloud_init_waits_for_the_final_stage_before_removing_what_it_reads() {
    let script = images_dir().join("ubuntu-common/files/scrub-cloud-init.sh");
    let (dir, _out) = sandbox();
    let cloud = CloudInitCopies::new(dir.path(), "secret");
    // The final stage has not started: the raw user-data goes at once, obj.pkl and cloud-config.txt (which that
    // stage still has to read) only after the wait.
    write(
        &cloud.run.join("status.json"),
        r#"{"v1": {"modules-final": {"start": null, "finished": null}, "stage": null}}"#,
    );
    let started = std::time::Instant::now();
    let output = run(cloud
        .env(Command::new("bash").arg(&script))
        .env("CLOUD_INIT_WAIT_SECONDS", "2"));
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "waited for the final stage"
    );
    assert!(log.contains("has not started"), "{log}");
    cloud.assert_removed(&log);
}

#[test]
fn run_jit_sh_reads_deletes_and_hands_the_config_to_the_runner_via_the_environment() {
    let script = images_dir().join("ubuntu-common/files/run-jit.sh");
    let user = runner_user();
    for (runner_exit, expected_exit) in [(0, 0), (3, 3)] {
        let (dir, out) = sandbox();
        let runner = dir.path().join("runner");
        fs::create_dir(&runner).expect("runner dir");
        chmod(&runner, 0o755);
        stub(
            &runner.join("run.sh"),
            &format!(
                "printf '%s' \"${{ACTIONS_RUNNER_INPUT_JITCONFIG:-}}\" > '{out}/env'\n\
                 printf '%s' \"$*\" > '{out}/args'\nid -un > '{out}/user'\nexit {runner_exit}\n",
                out = out.display()
            ),
        );
        let jit = dir.path().join("jitconfig");
        write(&jit, "  eyJhIjoiYiJ9.secret-jit==  \n");
        let cloud = CloudInitCopies::new(dir.path(), "eyJhIjoiYiJ9.secret-jit==");
        let output = run(cloud
            .env(Command::new("bash").arg(&script))
            .env("JIT_FILE", &jit)
            .env("RUNNER_DIR", &runner)
            .env("RUNNER_USER", &user)
            .env("JIT_SETTLE_SECONDS", "1")
            .env("JIT_WAIT_SECONDS", "10"));
        let log = text(&output);
        assert_eq!(
            output.status.code(),
            Some(expected_exit),
            "run-jit.sh:\n{log}"
        );
        assert!(!jit.exists(), "the JIT file must be deleted");
        cloud.assert_removed(&log);
        assert_eq!(
            read(&out.join("env")),
            "eyJhIjoiYiJ9.secret-jit==",
            "config via the environment"
        );
        assert_eq!(
            read(&out.join("args")),
            "",
            "no arguments (the secret stays off the command line)"
        );
        assert_eq!(
            read(&out.join("user")).trim(),
            user,
            "the runner runs as the runner user"
        );
        assert!(
            !log.contains("secret-jit"),
            "the secret must not be printed:\n{log}"
        );
    }

    // An empty file is rejected (and removed) after the wait.
    let (dir, _out) = sandbox();
    let jit = dir.path().join("jitconfig");
    write(&jit, "");
    let cloud = CloudInitCopies::new(dir.path(), "unused");
    let output = run(cloud
        .env(Command::new("bash").arg(&script))
        .env("JIT_FILE", &jit)
        .env("RUNNER_DIR", dir.path())
        .env("RUNNER_USER", &user)
        .env("JIT_SETTLE_SECONDS", "1")
        .env("JIT_WAIT_SECONDS", "2"));
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(!jit.exists());

    // Never as root.
    let output = run(cloud
        .env(Command::new("bash").arg(&script))
        .env("JIT_FILE", &jit)
        .env("RUNNER_DIR", dir.path())
        .env("RUNNER_USER", "root"));
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("refusing to run the runner as root"));
}

#[test]
fn run_once_sh_registers_an_ephemeral_runner_without_exposing_the_token() {
    let script = images_dir().join("ubuntu-common/files/run-once.sh");
    let user = runner_user();
    let token = "AAAREGISTRATIONTOKEN0123456789";
    let (dir, out) = sandbox();
    let runner = dir.path().join("runner");
    fs::create_dir(&runner).expect("runner dir");
    chmod(&runner, 0o755);
    let record = |name: &str| {
        format!(
            "printf '%s\\n' \"$@\" > '{out}/{name}.args'\n\
             printf '%s' \"${{ACTIONS_RUNNER_INPUT_TOKEN:-}}\" > '{out}/{name}.env'\n",
            out = out.display()
        )
    };
    stub(&runner.join("config.sh"), &record("config"));
    stub(
        &runner.join("run.sh"),
        &format!("{}exit 0\n", record("run")),
    );
    let token_file = dir.path().join("registration-token");
    write(&token_file, &format!("{token}\n"));
    let cloud = CloudInitCopies::new(dir.path(), token);

    let output = run(cloud
        .env(Command::new("bash").arg(&script))
        .arg("https://github.com/NREL/EnergyPlus")
        .arg(format!("@{}", token_file.display()))
        .arg("runner-42")
        .arg("self-hosted,linux")
        .env("RUNNER_DIR", &runner)
        .env("RUNNER_USER", &user));
    let log = text(&output);
    assert!(output.status.success(), "run-once.sh:\n{log}");
    assert!(!token_file.exists(), "the token file must be deleted");
    cloud.assert_removed(&log);
    assert!(
        !log.contains(token),
        "the token must not be printed:\n{log}"
    );

    let config_args: Vec<String> = read(&out.join("config.args"))
        .lines()
        .map(str::to_owned)
        .collect();
    for flag in ["--unattended", "--ephemeral", "--disableupdate"] {
        assert!(
            config_args.iter().any(|a| a == flag),
            "config.sh needs {flag}: {config_args:?}"
        );
    }
    let value_of = |flag: &str| {
        config_args
            .iter()
            .position(|a| a == flag)
            .and_then(|i| config_args.get(i + 1))
            .cloned()
    };
    assert_eq!(
        value_of("--url").as_deref(),
        Some("https://github.com/NREL/EnergyPlus")
    );
    assert_eq!(value_of("--name").as_deref(), Some("runner-42"));
    assert_eq!(value_of("--labels").as_deref(), Some("self-hosted,linux"));
    assert!(
        !config_args
            .iter()
            .any(|a| a.contains(token) || a == "--token" || a == "remove")
    );
    assert_eq!(
        read(&out.join("config.env")),
        token,
        "token via ACTIONS_RUNNER_INPUT_TOKEN"
    );
    assert_eq!(
        read(&out.join("run.args")),
        "\n",
        "run.sh gets no arguments"
    );
    assert_eq!(
        read(&out.join("run.env")),
        "",
        "run.sh does not see the token"
    );

    let code: Vec<String> = read(&script)
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert!(
        !code.iter().any(|l| l.contains("remove")),
        "no `config.sh remove` with a registration token"
    );
}

/// Runs a packer-build.sh with stub `curl` (answers `body`) and `packer` (records its calls).
fn run_packer_build(
    script: &Path,
    body: &str,
    extra_env: &[(&str, &str)],
) -> (Output, PathBuf, tempfile::TempDir) {
    let (dir, out) = sandbox();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).expect("bin dir");
    let response = dir.path().join("response.json");
    write(&response, body);
    stub(
        &bin.join("curl"),
        &format!(
            "printf '%s\\n' \"$@\" > '{out}/curl.args'\ncat > '{out}/curl.stdin'\ncat '{response}'\n",
            out = out.display(),
            response = response.display()
        ),
    );
    stub(
        &bin.join("packer"),
        &format!(
            "printf '%s\\n' \"$*\" >> '{out}/packer.calls'\n\
             env | grep -E '^(PKR_VAR|PACKER_VAR)_' | sort > '{out}/packer.env' || true\n",
            out = out.display()
        ),
    );
    let token_file = dir.path().join("token");
    write(&token_file, "5ec7e7-70ken-5ecre7\n");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned())
    );
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .arg("-var=foo=bar")
        .env_clear()
        .env("PATH", path)
        .env(
            "HOME",
            std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned()),
        )
        .env("PROXMOX_URL", "https://127.0.0.1:8006/api2/json/")
        .env("PROXMOX_USERNAME", "root@pam!packer")
        .env("PROXMOX_TOKEN_FILE", &token_file)
        .env("PROXMOX_NODE", "node1")
        .env("PROXMOX_INSECURE_SKIP_TLS_VERIFY", "true");
    for (key, value) in extra_env {
        cmd.env(key, value);
    }
    (run(&mut cmd), out, dir)
}

#[test]
fn packer_build_sh_reuses_an_iso_found_through_the_api() {
    let script = images_dir().join("ubuntu-2404/packer-build.sh");
    let body = r#"{"data":[{"volid":"local:iso/debian.iso","content":"iso"},
        {"volid":"local:iso/ubuntu-24.04.3-live-server-amd64.iso","content":"iso","size":3}]}"#;
    let (output, out, _dir) = run_packer_build(&script, body, &[]);
    let log = text(&output);
    assert!(output.status.success(), "packer-build.sh:\n{log}");
    assert!(
        !log.contains("5ec7e7-70ken-5ecre7"),
        "the token must not be printed:\n{log}"
    );

    let curl_args = read(&out.join("curl.args"));
    assert!(
        !curl_args.contains("5ec7e7-70ken-5ecre7"),
        "token on curl's command line:\n{curl_args}"
    );
    assert!(curl_args.contains("--insecure"), "TLS opt-in honoured");
    assert!(
        curl_args.contains(
            "https://127.0.0.1:8006/api2/json/nodes/node1/storage/local/content?content=iso"
        ),
        "{curl_args}"
    );
    let curl_stdin = read(&out.join("curl.stdin"));
    assert!(curl_stdin.contains("Authorization: PVEAPIToken=root@pam!packer=5ec7e7-70ken-5ecre7"));

    let dir = images_dir().join("ubuntu-2404");
    let calls = read(&out.join("packer.calls"));
    assert_eq!(
        calls,
        format!(
            "init {dir}\nbuild -var=foo=bar {dir}\n",
            dir = dir.display()
        ),
        "packer init, then packer build"
    );
    let env = read(&out.join("packer.env"));
    assert!(
        env.contains("PKR_VAR_iso_file=local:iso/ubuntu-24.04.3-live-server-amd64.iso\n"),
        "{env}"
    );
    assert!(!env.contains("PKR_VAR_iso_url="), "{env}");
    assert!(
        env.contains("PKR_VAR_proxmox_url=https://127.0.0.1:8006/api2/json\n"),
        "{env}"
    );
    assert!(
        env.contains("PKR_VAR_proxmox_username=root@pam!packer\n"),
        "{env}"
    );
    assert!(
        env.contains("PKR_VAR_proxmox_token=5ec7e7-70ken-5ecre7\n"),
        "{env}"
    );
    assert!(
        env.contains("PKR_VAR_insecure_skip_tls_verify=true\n"),
        "{env}"
    );
    assert!(
        !env.contains("PACKER_VAR_"),
        "the seed's wrong prefix must not come back: {env}"
    );
}

#[test]
fn packer_build_sh_downloads_a_missing_iso_and_windows_needs_its_isos() {
    let body = r#"{"data":[{"volid":"local:iso/other.iso","content":"iso"}]}"#;
    for (dir, url) in [
        (
            "ubuntu-2404",
            "https://releases.ubuntu.com/24.04.3/ubuntu-24.04.3-live-server-amd64.iso",
        ),
        (
            "ubuntu-2204",
            "https://releases.ubuntu.com/22.04.5/ubuntu-22.04.5-live-server-amd64.iso",
        ),
    ] {
        let script = images_dir().join(dir).join("packer-build.sh");
        let (output, out, _tmp) = run_packer_build(&script, body, &[]);
        assert!(
            output.status.success(),
            "{dir}/packer-build.sh:\n{}",
            text(&output)
        );
        let env = read(&out.join("packer.env"));
        assert!(
            env.contains(&format!("PKR_VAR_iso_url={url}\n")),
            "{dir}: {env}"
        );
        assert!(env.contains("PKR_VAR_iso_file=\n"), "{dir}: {env}");
    }

    let script = images_dir().join("windows-2022/packer-build.sh");
    let (output, out, _tmp) = run_packer_build(&script, body, &[]);
    assert!(
        !output.status.success(),
        "no Windows ISO and no URL must fail"
    );
    assert!(text(&output).contains("SERVER_EVAL_x64FRE_en-us.iso is not on storage local"));
    assert!(!out.join("packer.calls").exists(), "packer must not run");

    let body = r#"{"data":[{"volid":"local:iso/SERVER_EVAL_x64FRE_en-us.iso"},
        {"volid":"local:iso/virtio-win.iso"}]}"#;
    let (output, out, _tmp) = run_packer_build(&script, body, &[("PROXMOX_ISO_STORAGE", "local")]);
    assert!(
        output.status.success(),
        "windows packer-build.sh:\n{}",
        text(&output)
    );
    let env = read(&out.join("packer.env"));
    assert!(
        env.contains("PKR_VAR_iso_file=local:iso/SERVER_EVAL_x64FRE_en-us.iso\n"),
        "{env}"
    );
    assert!(
        env.contains("PKR_VAR_virtio_iso_file=local:iso/virtio-win.iso\n"),
        "{env}"
    );

    // A missing credential is a clear error, before any API call.
    let (output, out, _tmp) = run_packer_build(
        &script,
        body,
        &[("PROXMOX_TOKEN_FILE", "/nonexistent/token")],
    );
    assert!(!output.status.success());
    assert!(text(&output).contains("PROXMOX_TOKEN_FILE=/nonexistent/token is not readable"));
    assert!(!out.join("curl.args").exists());
}
