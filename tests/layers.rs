//! The library's modules import one way: this test reads the `use` lines
//! and paths (`crate::a::B`, `super::C`, `child::D`) of every source file
//! under `src/`, resolves each imported name to the file that defines it
//! (following re-exports: a `pub use` hands a name on and ties nothing by
//! itself, so a folder's `mod.rs` that only hands its children's names on
//! is no loop with them), and fails on any loop between files and any
//! loop between top-level modules. A file taking a name from the face
//! (`mod.rs`) of a folder it is inside ties nothing either: that is the
//! folder's own vocabulary; the face taking from its files does.
//!
//! Test modules (`tests.rs`, `src/**/tests/`, inline `#[cfg(test)] mod`)
//! are left out: they may reach anywhere. `main.rs` is the binary, a
//! crate of its own above everything.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A module path from the crate root: `["engine", "refresher"]`.
type ModPath = Vec<String>;

struct SourceFile {
    path: PathBuf,
    module: ModPath,
    /// Code with comments, strings and inline test modules removed.
    code: String,
    /// Names of items this file defines.
    defines: BTreeSet<String>,
    /// Names this file brings in with `use`, and the full path of each.
    imports: BTreeMap<String, Vec<String>>,
    /// Every path this file names (from its `use` trees and its code).
    named: Vec<Vec<String>>,
}

#[test]
fn no_module_imports_its_way_back_to_itself() {
    let files = read_sources(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").as_path());
    assert!(files.len() > 50, "the sources were not found");
    let graph = file_graph(&files);
    let loops = cycles(&graph);
    let mut report = String::new();
    for cycle in &loops {
        report.push_str(&format!("\n  loop of {} files:", cycle.len()));
        for file in cycle {
            let targets: Vec<&str> = graph[file]
                .iter()
                .filter(|target| cycle.contains(*target))
                .map(String::as_str)
                .collect();
            report.push_str(&format!("\n    {file} -> {}", targets.join(", ")));
        }
    }
    assert!(loops.is_empty(), "files import each other:{report}");
}

#[test]
fn no_top_level_module_imports_its_way_back_to_itself() {
    let files = read_sources(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").as_path());
    let graph = file_graph(&files);
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, targets) in &graph {
        let from = top_level(file);
        let entry = top.entry(from.clone()).or_default();
        for target in targets {
            let to = top_level(target);
            if to != from {
                entry.insert(to);
            }
        }
    }
    let loops = cycles(&top);
    let mut report = String::new();
    for cycle in &loops {
        report.push_str(&format!("\n  {}", cycle.join(" <-> ")));
        for module in cycle {
            for (file, targets) in &graph {
                if top_level(file) != *module {
                    continue;
                }
                for target in targets {
                    let to = top_level(target);
                    if to != *module && cycle.contains(&to) {
                        report.push_str(&format!("\n    {file} -> {target}"));
                    }
                }
            }
        }
    }
    assert!(
        loops.is_empty(),
        "top-level modules import each other:{report}"
    );
}

/// The top-level module a file belongs to: `src/engine/app.rs` -> `engine`.
fn top_level(file: &str) -> String {
    let rest = file.strip_prefix("src/").unwrap_or(file);
    let first = rest.split('/').next().unwrap_or(rest);
    first.trim_end_matches(".rs").to_owned()
}

fn read_sources(src: &Path) -> Vec<SourceFile> {
    let mut paths = Vec::new();
    walk(src, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(src).unwrap();
            let module = module_path(relative)?;
            let text = fs::read_to_string(&path).unwrap();
            let code = strip_test_modules(&strip_comments_and_strings(&text));
            let (imports, mut named) = use_trees(&code);
            named.extend(inline_paths(&code));
            Some(SourceFile {
                path: Path::new("src").join(relative),
                module,
                defines: definitions(&code),
                imports,
                named,
                code,
            })
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name == "tests") {
                continue;
            }
            walk(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The module a file under `src/` holds; `None` for the binary and tests.
fn module_path(relative: &Path) -> Option<ModPath> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = last.trim_end_matches(".rs");
    match stem {
        "main" if parts.is_empty() => return None,
        "tests" => return None,
        "lib" if parts.is_empty() => {}
        "mod" => {}
        _ => parts.push(stem.to_owned()),
    }
    Some(parts)
}

/// Blanks out comments, string and char literals, keeping line shapes.
fn strip_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('#') || next == Some('"'))
            && !ident_char_before(&chars, i)
        {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|k| chars.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A char literal ('a', '\n', '\u{..}'), not a lifetime ('a).
            let close = if next == Some('\\') {
                (i + 2..chars.len().min(i + 12)).find(|&j| chars[j] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(end) => {
                    out.push_str("' '");
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_char_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// Removes `#[cfg(test)]` items (an inline `mod tests { .. }` or a
/// `mod tests;` declaration, or a test-only `use`).
fn strip_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        // The item ends at its first `;` unless a `{` comes first, in
        // which case it ends where that brace closes.
        let semi = after.find(';');
        let brace = after.find('{');
        let end = match (semi, brace) {
            (Some(s), Some(b)) if s < b => s + 1,
            (Some(s), None) => s + 1,
            (_, Some(b)) => {
                let mut depth = 0;
                let mut end = after.len();
                for (offset, c) in after[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + offset + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, None) => after.len(),
        };
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every word of `code` with its byte offset.
fn words(code: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in code.char_indices() {
        match (is_ident(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, &code[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &code[s..]));
    }
    out
}

/// Names of the items a file defines (including its child modules).
fn definitions(code: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 9] = [
        "struct", "enum", "fn", "trait", "type", "const", "static", "mod", "union",
    ];
    let words = words(code);
    let mut out = BTreeSet::new();
    for pair in words.windows(2) {
        if KEYWORDS.contains(&pair[0].1) {
            out.insert(pair[1].1.to_owned());
        }
    }
    for pair in words.windows(3) {
        if pair[0].1 == "macro_rules" {
            out.insert(pair[1].1.to_owned());
        }
    }
    out
}

/// The `use` declarations of a file: the names they bring in (by the name
/// they go by here) and every path they name.
fn use_trees(code: &str) -> (BTreeMap<String, Vec<String>>, Vec<Vec<String>>) {
    let mut imports = BTreeMap::new();
    let mut named = Vec::new();
    for (at, word) in words(code) {
        if word != "use" || (at > 0 && is_ident(code[..at].chars().last().unwrap())) {
            continue;
        }
        let Some(end) = code[at..].find(';') else {
            continue;
        };
        // One space between words (`d as e`), none around punctuation.
        let tree = code[at + 3..at + end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let tree = ["::", "{", "}", ","].iter().fold(tree, |tree, mark| {
            tree.replace(&format!(" {mark}"), mark)
                .replace(&format!("{mark} "), mark)
        });
        let tree = tree.trim();
        // `pub use` (any visibility) hands a name on: it is followed when
        // another file names it here, but ties nothing by itself.
        let before = code[..at].trim_end();
        let hands_on = before.ends_with("pub")
            || before.ends_with(')') && {
                let open = before.rfind('(').unwrap_or(0);
                before[..open].trim_end().ends_with("pub")
            };
        for (alias, path) in expand_tree(tree) {
            if let Some(alias) = alias {
                imports.insert(alias, path.clone());
            }
            if !hands_on {
                named.push(path);
            }
        }
    }
    (imports, named)
}

/// `a::{b,c::{d as e}}` into `[(Some("b"), [a,b]), (Some("e"), [a,c,d])]`;
/// a glob or `self` names the module itself.
fn expand_tree(tree: &str) -> Vec<(Option<String>, Vec<String>)> {
    fn go(prefix: &[String], tree: &str, out: &mut Vec<(Option<String>, Vec<String>)>) {
        let tree = tree.trim_start_matches("::");
        if let Some(open) = tree.find('{') {
            let head: Vec<String> = tree[..open]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            let mut base = prefix.to_vec();
            base.extend(head);
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        go(&base, &inner[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            go(&base, &inner[start..], out);
            return;
        }
        if tree.is_empty() {
            return;
        }
        let (path, alias) = match tree.split_once(" as ") {
            Some((path, alias)) => (path, Some(alias.to_owned())),
            None => (tree, None),
        };
        let mut full = prefix.to_vec();
        full.extend(
            path.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        match full.last().map(String::as_str) {
            Some("*") => {
                full.pop();
                out.push((None, full));
            }
            Some("self") => {
                full.pop();
                let alias = alias.or_else(|| full.last().cloned());
                out.push((alias, full));
            }
            Some(last) => {
                let alias = alias.or_else(|| Some(last.to_owned()));
                out.push((alias, full));
            }
            None => {}
        }
    }
    let mut out = Vec::new();
    go(&[], tree, &mut out);
    out
}

/// Paths written in code: `crate::a::b`, `super::x`, `self::y`, and
/// `name::thing` where `name` may be an imported module.
fn inline_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        let starts_word = is_ident(c)
            && (i == 0 || !is_ident(bytes[i - 1] as char))
            && (i < 2 || &code[i - 2..i] != "::");
        if !starts_word {
            i += 1;
            continue;
        }
        let mut path = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && is_ident(bytes[j] as char) {
                j += 1;
            }
            if start == j {
                break;
            }
            path.push(code[start..j].to_owned());
            if code[j..].starts_with("::") && code[j + 2..].starts_with(|c: char| is_ident(c)) {
                j += 2;
            } else {
                break;
            }
        }
        if path.len() > 1 {
            out.push(path);
        }
        i = j.max(i + 1);
    }
    out
}

/// Which file each file imports from, by path from the repository.
fn file_graph(files: &[SourceFile]) -> BTreeMap<String, BTreeSet<String>> {
    let by_module: BTreeMap<&ModPath, &SourceFile> =
        files.iter().map(|file| (&file.module, file)).collect();
    let mut graph = BTreeMap::new();
    for file in files {
        let from = file.path.display().to_string();
        let mut targets = BTreeSet::new();
        for path in &file.named {
            if let Some(target) = resolve(&by_module, file, path, 0) {
                // A folder's own vocabulary, taken from its face by a file
                // inside it, is the folder speaking to itself.
                let inside = file.module.starts_with(&target.module);
                let target = target.path.display().to_string();
                if target != from && !inside {
                    targets.insert(target);
                }
            }
        }
        graph.insert(from, targets);
    }
    // Keep the code field in use for the reader of a failure.
    assert!(files
        .iter()
        .all(|file| !file.code.is_empty() || file.defines.is_empty()));
    graph
}

/// The file defining what `path` (as written in `from`) names.
fn resolve<'a>(
    modules: &BTreeMap<&ModPath, &'a SourceFile>,
    from: &SourceFile,
    path: &[String],
    depth: usize,
) -> Option<&'a SourceFile> {
    if depth > 16 || path.is_empty() {
        return None;
    }
    let mut module: ModPath = match path[0].as_str() {
        "crate" => Vec::new(),
        "super" | "self" => from.module.clone(),
        first => {
            // A child module of this one, named as in `use child::Item`.
            let mut child = from.module.clone();
            child.push(first.to_owned());
            if modules.contains_key(&child) {
                let mut full = vec!["self".to_owned()];
                full.extend_from_slice(path);
                return resolve(modules, from, &full, depth + 1);
            }
            // A name this file imported (a module or item), or nothing of
            // the crate's (std, a dependency, a local variable).
            let imported = from.imports.get(first)?;
            let mut full = imported.clone();
            full.extend_from_slice(&path[1..]);
            if full.first().is_some_and(|head| head == first) && full.len() == path.len() {
                return None;
            }
            return resolve(modules, from, &full, depth + 1);
        }
    };
    let mut rest = &path[1..];
    if path[0] == "super" {
        module.pop();
    }
    while let Some(first) = rest.first() {
        if first == "super" {
            module.pop();
            rest = &rest[1..];
        } else {
            break;
        }
    }
    loop {
        let here = modules.get(&module)?;
        let Some(next) = rest.first() else {
            return Some(here);
        };
        let mut child = module.clone();
        child.push(next.clone());
        if modules.contains_key(&child) {
            module = child;
            rest = &rest[1..];
            continue;
        }
        // An item of this module: defined here, or brought in by a `use`.
        if here.defines.contains(next) {
            return Some(here);
        }
        if let Some(imported) = here.imports.get(next) {
            let mut full = imported.clone();
            full.extend_from_slice(&rest[1..]);
            return resolve(modules, here, &full, depth + 1).or(Some(here));
        }
        return Some(here);
    }
}

/// The strongly connected groups of more than one node (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(state: &mut State<'g>, node: &'g str) {
        state.index.insert(node, state.next);
        state.low.insert(node, state.next);
        state.next += 1;
        state.stack.push(node);
        state.on_stack.insert(node);
        if let Some(targets) = state.graph.get(node) {
            for target in targets {
                let target = target.as_str();
                if !state.index.contains_key(target) {
                    if !state.graph.contains_key(target) {
                        continue;
                    }
                    visit(state, target);
                    let low = state.low[target].min(state.low[node]);
                    state.low.insert(node, low);
                } else if state.on_stack.contains(target) {
                    let low = state.index[target].min(state.low[node]);
                    state.low.insert(node, low);
                }
            }
        }
        if state.low[node] == state.index[node] {
            let mut group = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                group.push(member.to_owned());
                if member == node {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                state.out.push(group);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.out
}
