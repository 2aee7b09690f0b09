//! Where each placeholder of a template stands, YAML-wise.
//!
//! A line-oriented scanner, not a full YAML parser: it knows indentation, `- `/`? ` entries,
//! `key: ` values, comments, single- and double-quoted scalars (also across lines), flow
//! collections (also across lines), block scalars (`|`, `>`) and multi-line plain scalars. That is
//! what cloud-config templates use; anything it does not recognise is treated as an unquoted
//! string, where only values that cannot change the YAML are accepted.

/// One template character, or a placeholder (index into the placeholder list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    /// A literal character (`$$` already turned into `$`).
    Char(char),
    /// The n-th placeholder occurrence.
    Ph(usize),
}

/// What surrounds a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ctx {
    /// The placeholder is the whole (unquoted) scalar: insert a YAML-safe scalar.
    Standalone {
        /// Inside `[..]` or `{..}`.
        in_flow: bool,
    },
    /// Part of a larger unquoted scalar spanning tokens `start..end`.
    Plain {
        /// Inside `[..]` or `{..}`.
        in_flow: bool,
        /// First token of the scalar.
        start: usize,
        /// One past its last token.
        end: usize,
    },
    /// Inside a double-quoted scalar.
    DoubleQuoted,
    /// Right after a backslash inside a double-quoted scalar.
    AfterBackslash,
    /// Inside a single-quoted scalar.
    SingleQuoted,
    /// Inside a block scalar's content.
    Block {
        /// At the start of the first content line (its indentation decides the block's).
        first_line_start: bool,
    },
    /// Inside a comment.
    Comment,
    /// Inside an anchor (`&`), alias (`*`) or tag (`!`).
    Token,
}

#[derive(Debug)]
struct BlockState {
    parent_indent: usize,
    content_indent: Option<usize>,
}

#[derive(Debug, Default)]
struct Scanner {
    block: Option<BlockState>,
    quote: Option<char>,
    flow_depth: usize,
    /// After a plain scalar ran to the end of a line at this indentation, more-indented lines
    /// continue it.
    plain_cont: Option<usize>,
    /// Inside a flow collection: whether the next token may start a node.
    flow_node_start: bool,
    ctxs: Vec<Option<Ctx>>,
}

fn is_ws(t: Option<&Tok>) -> bool {
    matches!(t, None | Some(Tok::Char(' ' | '\t' | '\r')))
}

fn is_flow_indicator(t: Option<&Tok>) -> bool {
    matches!(t, Some(Tok::Char(',' | '[' | ']' | '{' | '}')))
}

impl Scanner {
    fn set(&mut self, tok: &Tok, ctx: Ctx) {
        if let Tok::Ph(k) = tok
            && let Some(slot) = self.ctxs.get_mut(*k)
            && slot.is_none()
        {
            *slot = Some(ctx);
        }
    }

    fn set_range(&mut self, toks: &[Tok], from: usize, to: usize, ctx: &Ctx) {
        for tok in &toks[from..to] {
            self.set(tok, ctx.clone());
        }
    }

    /// Scans one line `toks[from..to]` (without its `\n`).
    fn line(&mut self, toks: &[Tok], from: usize, to: usize) {
        let indent = toks[from..to]
            .iter()
            .take_while(|t| **t == Tok::Char(' '))
            .count();
        let blank = toks[from..to]
            .iter()
            .all(|t| matches!(t, Tok::Char(' ' | '\t' | '\r')));

        if let Some(block) = &mut self.block {
            if blank {
                return;
            }
            let (inside, first) = match block.content_indent {
                Some(ci) => (indent >= ci, false),
                None if indent > block.parent_indent => {
                    block.content_indent = Some(indent);
                    (true, true)
                }
                None => (false, false),
            };
            if inside {
                for (i, tok) in toks.iter().enumerate().take(to).skip(from) {
                    let ctx = Ctx::Block {
                        first_line_start: first && i == from + indent,
                    };
                    self.set(tok, ctx);
                }
                return;
            }
            self.block = None;
        }

        if self.quote.is_none()
            && self.flow_depth == 0
            && let Some(pi) = self.plain_cont
        {
            if blank {
                return;
            }
            let first = toks.get(from + indent);
            if indent > pi && first != Some(&Tok::Char('#')) {
                self.continuation(toks, from + indent, to);
                return;
            }
        }
        self.plain_cont = None;
        let node_start = if self.flow_depth > 0 {
            self.flow_node_start
        } else {
            true
        };
        self.scan(toks, from + indent, to, from, node_start, indent);
    }

    /// A continuation line of a multi-line plain scalar: everything up to a comment is part of it.
    fn continuation(&mut self, toks: &[Tok], from: usize, to: usize) {
        let mut end = to;
        for i in from..to {
            if toks[i] == Tok::Char('#') && (i == from || is_ws(toks.get(i - 1))) {
                self.set_range(toks, i, to, &Ctx::Comment);
                end = i;
                break;
            }
        }
        while end > from && is_ws(toks.get(end - 1)) {
            end -= 1;
        }
        let ctx = Ctx::Plain {
            in_flow: false,
            start: from,
            end,
        };
        self.set_range(toks, from, end, &ctx);
    }

    fn scan(
        &mut self,
        toks: &[Tok],
        start: usize,
        to: usize,
        line_start: usize,
        mut node_start: bool,
        indent: usize,
    ) {
        let mut i = start;
        // Column of the node owning the next scalar (the key of `key: v`, the `-` of `- v`):
        // lines indented deeper than it continue a plain scalar that ran to the end of the line.
        let mut parent_col = indent;
        let mut last_scalar_col = None;
        while i < to {
            if let Some(q) = self.quote {
                match toks[i] {
                    Tok::Ph(_) => {
                        let ctx = if q == '"' {
                            Ctx::DoubleQuoted
                        } else {
                            Ctx::SingleQuoted
                        };
                        self.set(&toks[i], ctx);
                        i += 1;
                    }
                    Tok::Char('\\') if q == '"' => {
                        if let Some(next @ Tok::Ph(_)) = toks.get(i + 1).filter(|_| i + 1 < to) {
                            self.set(next, Ctx::AfterBackslash);
                        }
                        i += 2;
                    }
                    Tok::Char(c) if c == q => {
                        if q == '\'' && toks.get(i + 1) == Some(&Tok::Char('\'')) && i + 1 < to {
                            i += 2;
                        } else {
                            self.quote = None;
                            node_start = false;
                            i += 1;
                        }
                    }
                    Tok::Char(_) => i += 1,
                }
                continue;
            }
            let prev_ws = i == line_start || is_ws(toks.get(i - 1));
            let next = if i + 1 < to { toks.get(i + 1) } else { None };
            match toks[i] {
                Tok::Char(' ' | '\t' | '\r') => i += 1,
                Tok::Char('#') if prev_ws => {
                    self.set_range(toks, i, to, &Ctx::Comment);
                    break;
                }
                Tok::Char(c @ ('"' | '\'')) if node_start => {
                    last_scalar_col = Some(i - line_start);
                    self.quote = Some(c);
                    i += 1;
                }
                Tok::Char('[' | '{') if node_start => {
                    self.flow_depth += 1;
                    node_start = true;
                    i += 1;
                }
                Tok::Char(']' | '}') if self.flow_depth > 0 => {
                    self.flow_depth -= 1;
                    node_start = false;
                    i += 1;
                }
                Tok::Char(',') if self.flow_depth > 0 => {
                    node_start = true;
                    i += 1;
                }
                Tok::Char(':')
                    if is_ws(next) || (self.flow_depth > 0 && is_flow_indicator(next)) =>
                {
                    if let Some(col) = last_scalar_col.take() {
                        parent_col = col;
                    }
                    node_start = true;
                    i += 1;
                }
                Tok::Char('-' | '?') if node_start && self.flow_depth == 0 && is_ws(next) => {
                    parent_col = i - line_start;
                    i += 1;
                }
                Tok::Char('|' | '>') if node_start && self.flow_depth == 0 => {
                    // Block scalar header: indicators, then an optional comment.
                    let mut explicit = None;
                    let mut j = i + 1;
                    while j < to {
                        match toks[j] {
                            Tok::Char(d @ '1'..='9') => explicit = d.to_digit(10),
                            Tok::Char('+' | '-') => {}
                            _ => break,
                        }
                        j += 1;
                    }
                    self.set_range(toks, j, to, &Ctx::Comment);
                    self.block = Some(BlockState {
                        parent_indent: parent_col,
                        content_indent: explicit.map(|d| parent_col + d as usize),
                    });
                    break;
                }
                Tok::Char(c @ ('&' | '!' | '*')) if node_start => {
                    let mut j = i + 1;
                    while j < to
                        && !is_ws(toks.get(j))
                        && !(self.flow_depth > 0 && is_flow_indicator(toks.get(j)))
                    {
                        j += 1;
                    }
                    self.set_range(toks, i, j, &Ctx::Token);
                    node_start = c != '*';
                    i = j;
                }
                _ => {
                    last_scalar_col = Some(i - line_start);
                    i = self.plain(toks, i, to, line_start, parent_col);
                    node_start = false;
                }
            }
        }
        if self.flow_depth > 0 {
            self.flow_node_start = node_start;
        }
    }

    /// A plain scalar starting at `start`; returns where it ends.
    fn plain(
        &mut self,
        toks: &[Tok],
        start: usize,
        to: usize,
        line_start: usize,
        parent_col: usize,
    ) -> usize {
        let in_flow = self.flow_depth > 0;
        let mut j = start;
        let mut at_eol = true;
        while j < to {
            let next = if j + 1 < to { toks.get(j + 1) } else { None };
            let prev_ws = j == line_start || is_ws(toks.get(j - 1));
            let stop = match toks[j] {
                Tok::Char('#') => prev_ws && j > start,
                Tok::Char(':') => is_ws(next) || (in_flow && is_flow_indicator(next)),
                Tok::Char(',' | ']' | '}' | '[' | '{') => in_flow,
                _ => false,
            };
            if stop {
                at_eol = false;
                break;
            }
            j += 1;
        }
        let mut end = j;
        while end > start && is_ws(toks.get(end - 1)) {
            end -= 1;
        }
        let ctx = if end == start + 1 && matches!(toks[start], Tok::Ph(_)) {
            Ctx::Standalone { in_flow }
        } else {
            Ctx::Plain {
                in_flow,
                start,
                end,
            }
        };
        self.set_range(toks, start, end, &ctx);
        if at_eol && !in_flow {
            self.plain_cont = Some(parent_col);
        }
        j
    }
}

/// The context of each of the `count` placeholders in `toks`.
pub(crate) fn scan(toks: &[Tok], count: usize) -> Vec<Ctx> {
    let mut scanner = Scanner {
        ctxs: vec![None; count],
        ..Scanner::default()
    };
    let mut from = 0;
    for (i, tok) in toks.iter().enumerate() {
        if *tok == Tok::Char('\n') {
            scanner.line(toks, from, i);
            from = i + 1;
        }
    }
    scanner.line(toks, from, toks.len());
    scanner
        .ctxs
        .into_iter()
        // Every placeholder is visited; were one missed, the strictest context applies.
        .map(|c| {
            c.unwrap_or(Ctx::Block {
                first_line_start: true,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctxs(template: &str) -> Vec<Ctx> {
        let parsed = crate::template::parse(template, true).unwrap();
        scan(&parsed.tokens, parsed.placeholders.len())
    }

    #[test]
    fn contexts() {
        assert_eq!(
            ctxs("hostname: ${runner_name}\n"),
            [Ctx::Standalone { in_flow: false }]
        );
        assert_eq!(
            ctxs("a:\n  - ${runner_name}  # c ${repo_url}\n"),
            [Ctx::Standalone { in_flow: false }, Ctx::Comment]
        );
        assert!(matches!(
            ctxs("runcmd:\n  - run-once.sh ${repo_url} x\n")[0],
            Ctx::Plain { in_flow: false, .. }
        ));
        assert_eq!(
            ctxs("runcmd:\n  - [a, ${repo_url}, \"x ${runner_name}\", 'y ${runner_user}']\n"),
            [
                Ctx::Standalone { in_flow: true },
                Ctx::DoubleQuoted,
                Ctx::SingleQuoted
            ]
        );
        assert_eq!(
            ctxs(
                "f:\n  - content: |\n      ${jit_config}\n      b ${runner_name}\n    path: ${repo_url}\n"
            ),
            [
                Ctx::Block {
                    first_line_start: true
                },
                Ctx::Block {
                    first_line_start: false
                },
                Ctx::Standalone { in_flow: false },
            ]
        );
        assert!(matches!(
            ctxs("a: one\n  two ${runner_name}\nb: ${repo_url}\n")[..],
            [Ctx::Plain { .. }, Ctx::Standalone { in_flow: false }]
        ));
        assert_eq!(
            ctxs("a: [x,\n  ${runner_name}]\nb: \"q\\${repo_url}\"\n"),
            [Ctx::Standalone { in_flow: true }, Ctx::AfterBackslash]
        );
        assert_eq!(ctxs("a: &${runner_name} b\n"), [Ctx::Token]);
        // `- key: v` owns its value at the key's column: the next key is no continuation.
        assert_eq!(
            ctxs(
                "w:\n  - path: /x\n    owner: a:b\n    content: |\n      ${jit_config}\n  - k: ${runner_name}\n"
            ),
            [
                Ctx::Block {
                    first_line_start: true
                },
                Ctx::Standalone { in_flow: false },
            ]
        );
    }
}
