//! `cargo xtask modules`: fails when the modules of a crate of the workspace import
//! each other in a circle.
//!
//! Modules in a circle cannot be read, tested or moved one without the others; a
//! crate whose modules only import "downward" can. For every library and binary
//! target, the check builds the module tree from the `mod` declarations (files and
//! inline blocks, `#[cfg(test)] mod tests` included) and draws an edge from module
//! M to module N when M's own items name N by a path: a `use` or any other path
//! starting with `crate::`, `super::`, `self::` or the name of a child module of M,
//! also inside macro invocations. The path is resolved from M, and its longest
//! prefix that names a module is N, so importing an item through a re-export is an
//! edge to the module that re-exports it. Declaring `mod x;` is not an edge;
//! `pub use x::Y;` is. A set of modules that reach each other (a strongly
//! connected component of more than one module) is reported as circles of
//! `a -> b -> a` with, for every edge, one place in the source that makes it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::ext::IdentExt as _;
use syn::visit::{self, Visit};

use crate::bench_gate::cargo;

/// Checks every workspace member, or only the crate named `only`; with
/// `print_edges`, also lists every edge with where it comes from.
pub fn run(root: &Path, only: Option<&str>, print_edges: bool) -> anyhow::Result<()> {
    let mut crates = workspace_crates(root)?;
    if let Some(name) = only {
        crates.retain(|krate| krate.name == name);
        if crates.is_empty() {
            bail!("no crate named {name:?} in the workspace");
        }
    }

    let mut failing = Vec::new();
    for krate in &crates {
        let mut modules = 0;
        let mut edges = 0;
        let mut in_circles = 0;
        let mut circles = 0;
        let mut report = String::new();
        for target in &krate.targets {
            let graph = Graph::build(&target.root)
                .with_context(|| format!("reading the modules of {} ({})", krate.name, target.label))?;
            for warning in &graph.warnings {
                eprintln!("{} ({}): warning: {warning}", krate.name, target.label);
            }
            modules += graph.modules.len();
            edges += graph.edges.len();
            if print_edges {
                for (from, to, witness) in graph.edges() {
                    let _ = writeln!(
                        report,
                        "  {}: {from} -> {to}  {}",
                        target.label,
                        witness.display(root)
                    );
                }
            }
            let cycles = graph.cycles();
            in_circles += cycles.iter().flatten().collect::<BTreeSet<_>>().len();
            circles += cycles.len();
            for cycle in &cycles {
                let chain: Vec<_> = cycle
                    .iter()
                    .chain(cycle.first())
                    .map(|&m| graph.name(m))
                    .collect();
                let _ = writeln!(report, "  cycle in {}: {}", target.label, chain.join(" -> "));
                for (i, &from) in cycle.iter().enumerate() {
                    let to = cycle[(i + 1) % cycle.len()];
                    let _ = writeln!(
                        report,
                        "    {} -> {}  {}",
                        graph.name(from),
                        graph.name(to),
                        graph.edges[&(from, to)].display(root)
                    );
                }
            }
            if !cycles.is_empty() {
                failing.push(krate.name.clone());
            }
        }
        let verdict = match circles {
            0 => "no cycle".to_owned(),
            1 => format!("1 cycle among {in_circles} modules"),
            _ => format!("{circles} cycles among {in_circles} modules"),
        };
        println!(
            "{}: {}, {}, {verdict}",
            krate.name,
            count(modules, "module"),
            count(edges, "edge")
        );
        print!("{report}");
    }
    failing.dedup();
    if !failing.is_empty() {
        bail!(
            "modules import each other in a circle in {}: import items by the path of the module \
             that defines them rather than through a parent's re-export, or move what both need \
             into a module of its own",
            failing.join(", ")
        );
    }
    Ok(())
}

/// `1 edge`, `2 edges`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A workspace member and the targets whose module trees are checked.
struct Crate {
    name: String,
    targets: Vec<Target>,
}

/// A library or binary target: the root of one module tree.
struct Target {
    /// `lib` or `bin NAME`, for messages.
    label: String,
    root: PathBuf,
}

/// The library and binary targets of every workspace member, from `cargo metadata`.
/// Tests, benchmarks, examples and build scripts are left out.
fn workspace_crates(root: &Path) -> anyhow::Result<Vec<Crate>> {
    let output = Command::new(cargo())
        .current_dir(root)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .context("cannot start cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("parsing the output of cargo metadata")?;
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata lists no packages")?;
    let mut crates = Vec::new();
    for package in packages {
        let name = package["name"].as_str().context("a package without a name")?;
        let mut targets = Vec::new();
        for target in package["targets"].as_array().into_iter().flatten() {
            let kinds: Vec<_> = target["kind"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str())
                .collect();
            let label = if kinds.contains(&"bin") {
                format!("bin {}", target["name"].as_str().unwrap_or("?"))
            } else if kinds.iter().any(|k| {
                matches!(
                    *k,
                    "lib" | "rlib" | "dylib" | "cdylib" | "staticlib" | "proc-macro"
                )
            }) {
                "lib".to_owned()
            } else {
                continue;
            };
            let src = target["src_path"]
                .as_str()
                .with_context(|| format!("{name} ({label}) has no src_path"))?;
            targets.push(Target {
                label,
                root: PathBuf::from(src),
            });
        }
        // The library first: its cycles are the ones dependants inherit.
        targets.sort_by_key(|t| t.label != "lib");
        crates.push(Crate {
            name: name.to_owned(),
            targets,
        });
    }
    Ok(crates)
}

/// A module of a target's tree.
struct Module {
    /// Names from the crate root down, empty for the root itself.
    path: Vec<String>,
    parent: Option<usize>,
    children: BTreeMap<String, usize>,
    /// The file its items are in: the declaring file for an inline module.
    file: PathBuf,
    /// Its own items; child modules are skipped when they are searched for paths.
    items: Vec<syn::Item>,
}

/// Where the reference that makes an edge is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    /// The source file.
    pub file: PathBuf,
    /// Its line, from 1.
    pub line: usize,
}

impl Witness {
    /// `file:line`, the file relative to `root` when it is under it.
    fn display(&self, root: &Path) -> String {
        let file = self.file.strip_prefix(root).unwrap_or(&self.file);
        format!("{}:{}", file.display(), self.line)
    }
}

/// The modules of one target and which one names which.
pub struct Graph {
    /// The root first; a module comes before its children.
    modules: Vec<Module>,
    /// (from, to) with the first reference found.
    edges: BTreeMap<(usize, usize), Witness>,
    /// Declared modules whose file was not found.
    warnings: Vec<String>,
}

impl Graph {
    /// Reads the module tree rooted at the crate root file `root` and the edges
    /// between its modules.
    pub fn build(root: &Path) -> anyhow::Result<Self> {
        let mut graph = Self {
            modules: vec![Module {
                path: Vec::new(),
                parent: None,
                children: BTreeMap::new(),
                file: root.to_owned(),
                items: Vec::new(),
            }],
            edges: BTreeMap::new(),
            warnings: Vec::new(),
        };
        let items = parse(root)?;
        // The crate root is a "mod.rs" file: its children are beside it.
        let dir = root.parent().unwrap_or(Path::new("."));
        graph.add_items(0, items, root, dir, false)?;
        graph.find_edges();
        Ok(graph)
    }

    /// Adds the children `items` declare to `module`, recursively, and keeps the
    /// items as the module's own. `child_dir` is where `mod x;` finds `x.rs`;
    /// `inline` says the items are in a `mod x { ... }` block of `file`.
    fn add_items(
        &mut self,
        module: usize,
        mut items: Vec<syn::Item>,
        file: &Path,
        child_dir: &Path,
        inline: bool,
    ) -> anyhow::Result<()> {
        for item in &mut items {
            let syn::Item::Mod(declaration) = item else {
                continue;
            };
            let name = declaration.ident.unraw().to_string();
            let path_attr = path_attribute(&declaration.attrs);
            let child = self.modules.len();
            let mut path = self.modules[module].path.clone();
            path.push(name.clone());
            self.modules.push(Module {
                path,
                parent: Some(module),
                children: BTreeMap::new(),
                file: file.to_owned(),
                items: Vec::new(),
            });
            self.modules[module].children.insert(name.clone(), child);

            if let Some((_, inner)) = declaration.content.take() {
                let dir = child_dir.join(path_attr.as_deref().unwrap_or(&name));
                self.add_items(child, inner, file, &dir, true)?;
                continue;
            }
            let found = match path_attr {
                // Relative to the file's directory, or inside an inline block to
                // the block's; the file then owns its directory as a mod.rs does.
                Some(relative) => {
                    let base = if inline {
                        child_dir
                    } else {
                        file.parent().unwrap_or(Path::new("."))
                    };
                    let target = base.join(relative);
                    let dir = target.parent().unwrap_or(Path::new(".")).to_owned();
                    Some((target, dir)).filter(|(target, _)| target.is_file())
                }
                None => [
                    child_dir.join(format!("{name}.rs")),
                    child_dir.join(&name).join("mod.rs"),
                ]
                .into_iter()
                .find(|candidate| candidate.is_file())
                .map(|target| (target, child_dir.join(&name))),
            };
            let Some((child_file, dir)) = found else {
                // A module of another platform or a generated one: nothing to read.
                self.warnings.push(format!(
                    "no file for `mod {name};` declared in {}",
                    file.display()
                ));
                continue;
            };
            self.modules[child].file.clone_from(&child_file);
            let inner = parse(&child_file)?;
            self.add_items(child, inner, &child_file, &dir, false)?;
        }
        self.modules[module].items = items;
        Ok(())
    }

    /// Resolves the paths in every module's own items into edges.
    fn find_edges(&mut self) {
        for from in 0..self.modules.len() {
            let mut collector = Collector::default();
            for item in &self.modules[from].items {
                collector.visit_item(item);
            }
            for reference in collector.references {
                let Some(to) = self.resolve(from, &reference) else {
                    continue;
                };
                if to != from {
                    self.edges.entry((from, to)).or_insert_with(|| Witness {
                        file: self.modules[from].file.clone(),
                        line: reference.line,
                    });
                }
            }
            // Only the paths were needed.
            self.modules[from].items = Vec::new();
        }
    }

    /// The module a path in module `from` names: the longest prefix of the path,
    /// resolved from `from`, that is a module. `None` for paths outside the crate.
    fn resolve(&self, from: usize, reference: &Reference) -> Option<usize> {
        let segments = &reference.segments;
        let first = segments.first()?.as_str();
        let (mut at, mut rest) = match first {
            "crate" => (0, &segments[1..]),
            "self" | "super" => (from, &segments[..]),
            // A single name is a local, a type or a function, never a module
            // followed by an item, except in `use child::{self}`.
            child
                if self.modules[from].children.contains_key(child)
                    && (reference.from_use || segments.len() > 1) =>
            {
                (from, &segments[..])
            }
            _ => return None,
        };
        while let Some((head, tail)) = rest.split_first() {
            match head.as_str() {
                "self" => {}
                "super" => at = self.modules[at].parent?,
                _ => break,
            }
            rest = tail;
        }
        for segment in rest {
            match self.modules[at].children.get(segment) {
                Some(&child) => at = child,
                None => break,
            }
        }
        Some(at)
    }

    /// `crate` or `crate::a::b`.
    fn name(&self, module: usize) -> String {
        std::iter::once("crate")
            .chain(self.modules[module].path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("::")
    }

    /// The edges as names, with where each comes from.
    pub fn edges(&self) -> Vec<(String, String, Witness)> {
        self.edges
            .iter()
            .map(|(&(from, to), witness)| (self.name(from), self.name(to), witness.clone()))
            .collect()
    }

    /// The circles: every edge between two modules of a strongly connected
    /// component lies on one of them, each the shortest through its first edge.
    /// Each is the list of its modules, starting with the first in tree order; the
    /// last imports the first.
    fn cycles(&self) -> Vec<Vec<usize>> {
        let n = self.modules.len();
        let mut successors = vec![Vec::new(); n];
        for &(from, to) in self.edges.keys() {
            successors[from].push(to);
        }
        let mut cycles = Vec::new();
        for component in strongly_connected(&successors) {
            if component.len() < 2 {
                continue;
            }
            let members: BTreeSet<usize> = component.into_iter().collect();
            let mut covered = BTreeSet::new();
            for &(from, to) in self.edges.keys() {
                if !members.contains(&from) || !members.contains(&to) || covered.contains(&(from, to)) {
                    continue;
                }
                let Some(back) = shortest_path(&successors, &members, to, from) else {
                    continue;
                };
                // from -> to -> ... -> (back to) from
                let mut cycle = vec![from];
                cycle.extend(&back[..back.len() - 1]);
                for (i, &a) in cycle.iter().enumerate() {
                    covered.insert((a, cycle[(i + 1) % cycle.len()]));
                }
                let start = cycle
                    .iter()
                    .enumerate()
                    .min_by_key(|&(_, &m)| m)
                    .map_or(0, |(i, _)| i);
                cycle.rotate_left(start);
                cycles.push(cycle);
            }
        }
        cycles.sort();
        cycles
    }

    /// The circles by module name, for tests.
    #[cfg(test)]
    fn cycle_names(&self) -> Vec<Vec<String>> {
        self.cycles()
            .iter()
            .map(|cycle| cycle.iter().map(|&m| self.name(m)).collect())
            .collect()
    }

    /// Where the edge `from -> to` (by name) comes from, for tests.
    #[cfg(test)]
    fn witness(&self, from: &str, to: &str) -> Option<Witness> {
        self.edges()
            .into_iter()
            .find(|(f, t, _)| f == from && t == to)
            .map(|(_, _, witness)| witness)
    }
}

/// The items of a source file.
fn parse(file: &Path) -> anyhow::Result<Vec<syn::Item>> {
    let text = fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let parsed = syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
    Ok(parsed.items)
}

/// The value of a `#[path = "..."]` attribute.
fn path_attribute(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|attr| match &attr.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

/// A path found in a module's items, before it is resolved.
struct Reference {
    segments: Vec<String>,
    line: usize,
    /// In a `use` tree, where a child module's name alone is a path to it.
    from_use: bool,
}

/// Collects the paths of one module's own items.
#[derive(Default)]
struct Collector {
    references: Vec<Reference>,
}

impl Collector {
    /// Every path of a `use` tree, each on the line of its last name.
    fn use_tree(&mut self, tree: &syn::UseTree, prefix: &mut Vec<String>, line: usize) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.unraw().to_string());
                self.use_tree(&p.tree, prefix, p.ident.span().start().line);
                prefix.pop();
            }
            // `use a::{self}` names `a`.
            syn::UseTree::Name(syn::UseName { ident })
            | syn::UseTree::Rename(syn::UseRename { ident, .. })
                if ident == "self" =>
            {
                self.push_use(prefix.clone(), ident.span().start().line);
            }
            syn::UseTree::Name(syn::UseName { ident })
            | syn::UseTree::Rename(syn::UseRename { ident, .. }) => {
                let mut segments = prefix.clone();
                segments.push(ident.unraw().to_string());
                self.push_use(segments, ident.span().start().line);
            }
            syn::UseTree::Glob(_) => self.push_use(prefix.clone(), line),
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(tree, prefix, line);
                }
            }
        }
    }

    fn push_use(&mut self, segments: Vec<String>, line: usize) {
        self.references.push(Reference {
            segments,
            line,
            from_use: true,
        });
    }

    /// Paths in the tokens of a macro invocation: a name, then `::` and a name,
    /// any number of times, not itself preceded by `::`.
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let colon = |i: usize, spacing: Spacing| matches!(tokens.get(i), Some(TokenTree::Punct(p)) if p.as_char() == ':' && p.spacing() == spacing);
        // `::` is a joint colon and another one.
        let path_sep = |i: usize| colon(i, Spacing::Joint) && colon(i + 1, Spacing::Alone);
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(group) => self.tokens(group.stream()),
                // After `::` the name continues a path, here one of another crate.
                TokenTree::Ident(ident) if !(i >= 2 && path_sep(i - 2)) && path_sep(i + 1) => {
                    let mut segments = vec![ident.unraw().to_string()];
                    let mut next = i + 1;
                    while path_sep(next) {
                        let Some(TokenTree::Ident(more)) = tokens.get(next + 2) else {
                            break;
                        };
                        segments.push(more.unraw().to_string());
                        next += 3;
                    }
                    if segments.len() > 1 {
                        self.references.push(Reference {
                            segments,
                            line: ident.span().start().line,
                            from_use: false,
                        });
                    }
                    i = next;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {
        // A child module's items count for the child.
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        // `use ::name` is another crate.
        if item.leading_colon.is_none() {
            self.use_tree(&item.tree, &mut Vec::new(), 0);
        }
    }

    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {
        // `pub(crate)` and `pub(super)` say who may see an item, and name no import.
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none()
            && let Some(first) = path.segments.first()
        {
            self.references.push(Reference {
                segments: path
                    .segments
                    .iter()
                    .map(|s| s.ident.unraw().to_string())
                    .collect(),
                line: first.ident.span().start().line,
                from_use: false,
            });
        }
        // Generic arguments hold paths of their own.
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        visit::visit_macro(self, mac);
        self.tokens(mac.tokens.clone());
    }
}

/// Tarjan's strongly connected components of the graph given by `successors`.
fn strongly_connected(successors: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        successors: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        components: Vec<Vec<usize>>,
    }

    fn visit(state: &mut State<'_>, v: usize) {
        state.index[v] = Some(state.next);
        state.low[v] = state.next;
        state.next += 1;
        state.stack.push(v);
        state.on_stack[v] = true;
        for &w in &state.successors[v] {
            match state.index[w] {
                None => {
                    visit(state, w);
                    state.low[v] = state.low[v].min(state.low[w]);
                }
                Some(index) if state.on_stack[w] => state.low[v] = state.low[v].min(index),
                Some(_) => {}
            }
        }
        if Some(state.low[v]) == state.index[v] {
            let mut component = Vec::new();
            while let Some(w) = state.stack.pop() {
                state.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            component.sort_unstable();
            state.components.push(component);
        }
    }

    let n = successors.len();
    let mut state = State {
        successors,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        components: Vec::new(),
    };
    for v in 0..n {
        if state.index[v].is_none() {
            visit(&mut state, v);
        }
    }
    state.components
}

/// The shortest path from `from` to `to` through `members` only, both ends
/// included.
fn shortest_path(
    successors: &[Vec<usize>],
    members: &BTreeSet<usize>,
    from: usize,
    to: usize,
) -> Option<Vec<usize>> {
    let mut came_from = BTreeMap::from([(from, from)]);
    let mut queue = VecDeque::from([from]);
    while let Some(v) = queue.pop_front() {
        if v == to {
            let mut path = vec![to];
            let mut at = to;
            while at != from {
                at = came_from[&at];
                path.push(at);
            }
            path.reverse();
            return Some(path);
        }
        for &w in &successors[v] {
            if members.contains(&w) && !came_from.contains_key(&w) {
                came_from.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crate of the given `(path under src/, text)` files, with `src/lib.rs` as
    /// its root, and its module graph.
    fn graph_of(files: &[(&str, &str)]) -> (tempfile::TempDir, Graph) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for (path, text) in files {
            let path = dir.path().join("src").join(path);
            fs::create_dir_all(path.parent().expect("a parent")).expect("the source directory");
            fs::write(&path, text).expect("a source file");
        }
        let graph = Graph::build(&dir.path().join("src/lib.rs")).expect("a module graph");
        (dir, graph)
    }

    fn names(cycles: &[&[&str]]) -> Vec<Vec<String>> {
        cycles
            .iter()
            .map(|cycle| cycle.iter().map(|&m| m.to_owned()).collect())
            .collect()
    }

    fn edge_names(graph: &Graph) -> Vec<(String, String)> {
        graph
            .edges()
            .into_iter()
            .map(|(from, to, _)| (from, to))
            .collect()
    }

    #[test]
    fn a_cycle_through_use_crate_is_found_with_its_witnesses() {
        let (dir, graph) = graph_of(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            ("a.rs", "use crate::b::B;\n\npub struct A(B);\n"),
            ("b.rs", "pub struct B;\n\nfn f(_: crate::a::A) {}\n"),
        ]);
        assert_eq!(graph.cycle_names(), names(&[&["crate::a", "crate::b"]]));
        assert_eq!(
            graph.witness("crate::a", "crate::b"),
            Some(Witness {
                file: dir.path().join("src/a.rs"),
                line: 1
            })
        );
        assert_eq!(
            graph.witness("crate::b", "crate::a"),
            Some(Witness {
                file: dir.path().join("src/b.rs"),
                line: 3
            })
        );
        assert!(graph.warnings.is_empty(), "{:?}", graph.warnings);
    }

    #[test]
    fn a_cycle_through_super_is_found() {
        let (_dir, graph) = graph_of(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            ("a.rs", "pub fn f() {\n    super::b::g();\n}\n"),
            ("b.rs", "pub fn g() {}\npub fn h() {\n    super::a::f();\n}\n"),
        ]);
        assert_eq!(graph.cycle_names(), names(&[&["crate::a", "crate::b"]]));
    }

    #[test]
    fn a_cycle_through_a_path_in_a_macro_is_found() {
        let (dir, graph) = graph_of(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            (
                "a.rs",
                "pub const X: u8 = 1;\n\npub fn show() -> String {\n    format!(\"{}\", crate :: b :: Y)\n}\n",
            ),
            ("b.rs", "pub const Y: u8 = super::a::X;\n"),
        ]);
        assert_eq!(graph.cycle_names(), names(&[&["crate::a", "crate::b"]]));
        assert_eq!(
            graph.witness("crate::a", "crate::b"),
            Some(Witness {
                file: dir.path().join("src/a.rs"),
                line: 4
            })
        );
    }

    #[test]
    fn a_path_in_a_nested_macro_group_counts() {
        let (_dir, graph) = graph_of(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            (
                "a.rs",
                "struct S {\n    y: u8,\n}\n\npub fn f() {\n    assert!(vec![S { y: crate::b::Y }].len() == 1);\n}\n",
            ),
            ("b.rs", "pub const Y: u8 = 0;\n"),
        ]);
        assert_eq!(
            edge_names(&graph),
            [("crate::a".to_owned(), "crate::b".to_owned())]
        );
    }

    #[test]
    fn a_plain_path_to_a_child_module_counts() {
        let (dir, graph) = graph_of(&[
            (
                "lib.rs",
                "mod child;\n\npub struct Root;\n\npub fn f() {\n    child::g();\n}\n",
            ),
            ("child.rs", "pub fn g() -> crate::Root {\n    crate::Root\n}\n"),
        ]);
        assert_eq!(graph.cycle_names(), names(&[&["crate", "crate::child"]]));
        assert_eq!(
            graph.witness("crate", "crate::child"),
            Some(Witness {
                file: dir.path().join("src/lib.rs"),
                line: 6
            })
        );

        let (_dir, graph) = graph_of(&[
            ("lib.rs", "mod child;\n\npub use child::g;\n\npub struct Root;\n"),
            (
                "child.rs",
                "use super::Root;\n\npub fn g() -> Root {\n    Root\n}\n",
            ),
        ]);
        assert_eq!(graph.cycle_names(), names(&[&["crate", "crate::child"]]));
    }

    #[test]
    fn a_mod_declaration_alone_is_not_an_edge() {
        let (_dir, graph) = graph_of(&[
            ("lib.rs", "mod a;\npub mod b;\n\npub(crate) struct Root;\n"),
            ("a.rs", "pub(crate) fn f() -> crate::Root {\n    crate::Root\n}\n"),
            ("b.rs", "pub(super) fn g() {}\n"),
        ]);
        assert_eq!(graph.modules.len(), 3);
        assert_eq!(edge_names(&graph), [("crate::a".to_owned(), "crate".to_owned())]);
        assert!(graph.cycle_names().is_empty());
    }

    #[test]
    fn an_acyclic_crate_passes() {
        let (_dir, graph) = graph_of(&[
            (
                "lib.rs",
                "pub mod error;\npub mod model;\npub mod service;\n\npub use service::Service;\n",
            ),
            ("error.rs", "pub struct Error;\n"),
            (
                "model.rs",
                "use crate::error::Error;\n\npub struct Model;\n\n\
                 #[cfg(test)]\nmod tests {\n    use super::*;\n\n    fn f(_: Error, _: Model) {}\n}\n",
            ),
            (
                "service/mod.rs",
                "mod store;\n\nuse self::store::Store;\nuse crate::{error::Error, model::Model};\n\n\
                 pub struct Service(Store, Model, Option<Error>);\n",
            ),
            ("service/store.rs", "pub struct Store(crate::model::Model);\n"),
        ]);
        assert!(graph.cycle_names().is_empty(), "{:?}", graph.cycle_names());
        let mut expected = [
            ("crate", "crate::service"),
            ("crate::model", "crate::error"),
            ("crate::model::tests", "crate::model"),
            ("crate::service", "crate::error"),
            ("crate::service", "crate::model"),
            ("crate::service", "crate::service::store"),
            ("crate::service::store", "crate::model"),
        ];
        expected.sort_unstable();
        let mut found = edge_names(&graph);
        found.sort();
        assert_eq!(
            found,
            expected
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_child_using_its_parents_re_export_is_a_cycle_once_the_parent_imports_it() {
        // The child names the item by the parent's re-export: the longest prefix
        // that is a module is the parent.
        let (dir, graph) = graph_of(&[
            ("lib.rs", "pub mod api;\n"),
            ("api.rs", "mod types;\nmod handlers;\n\npub use types::Request;\n"),
            ("api/types.rs", "pub struct Request;\n"),
            (
                "api/handlers.rs",
                "use crate::api::Request;\n\npub fn handle(_: Request) {}\n",
            ),
        ]);
        assert!(graph.cycle_names().is_empty(), "{:?}", graph.cycle_names());
        assert_eq!(
            graph.witness("crate::api::handlers", "crate::api"),
            Some(Witness {
                file: dir.path().join("src/api/handlers.rs"),
                line: 1
            })
        );

        let (_dir, graph) = graph_of(&[
            ("lib.rs", "pub mod api;\n"),
            (
                "api/mod.rs",
                "mod types;\nmod handlers;\n\npub use self::types::Request;\npub use handlers::handle;\n",
            ),
            ("api/types.rs", "pub struct Request;\n"),
            (
                "api/handlers.rs",
                "use crate::api::Request;\n\npub fn handle(_: Request) {}\n",
            ),
        ]);
        assert_eq!(
            graph.cycle_names(),
            names(&[&["crate::api", "crate::api::handlers"]])
        );
    }

    #[test]
    fn inline_modules_and_path_attributes_are_followed() {
        let (dir, graph) = graph_of(&[
            (
                "lib.rs",
                "mod outer {\n    pub mod inner;\n}\n#[path = \"elsewhere/other.rs\"]\nmod other;\n",
            ),
            ("outer/inner.rs", "pub fn f() {\n    crate::other::g();\n}\n"),
            (
                "elsewhere/other.rs",
                "pub fn g() {}\npub fn h() {\n    crate::outer::inner::f();\n}\n",
            ),
        ]);
        assert_eq!(
            graph.cycle_names(),
            names(&[&["crate::outer::inner", "crate::other"]])
        );
        assert_eq!(
            graph.witness("crate::other", "crate::outer::inner"),
            Some(Witness {
                file: dir.path().join("src/elsewhere/other.rs"),
                line: 3
            })
        );
    }

    #[test]
    fn every_edge_of_a_component_is_on_a_reported_cycle() {
        // a -> b -> c -> a, and a -> c: two circles through a.
        let (_dir, graph) = graph_of(&[
            ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
            ("a.rs", "use crate::b::B;\nuse crate::c::C;\npub struct A;\n"),
            ("b.rs", "use crate::c::C;\npub struct B;\n"),
            ("c.rs", "use crate::a::A;\npub struct C;\n"),
        ]);
        assert_eq!(
            graph.cycle_names(),
            names(&[&["crate::a", "crate::b", "crate::c"], &["crate::a", "crate::c"]])
        );
    }

    #[test]
    fn paths_to_other_crates_are_not_edges() {
        let (_dir, graph) = graph_of(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            ("a.rs", "use ::b::X;\nuse std::fmt;\npub fn f() { b::g(); }\n"),
            ("b.rs", "pub fn g() {}\n"),
        ]);
        assert!(graph.edges().is_empty(), "{:?}", edge_names(&graph));
    }
}
