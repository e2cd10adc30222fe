//! The documentation's links: every relative link of README.md and of the book's pages in
//! `docs/` leads to a file that exists and, with a `#fragment`, to a heading of that page, so
//! that the links work on GitHub and in the book (`mdbook build docs`) alike; and the book's
//! table of contents, `docs/SUMMARY.md`, lists every page.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

use pulldown_cmark::{Event, LinkType, Options, Parser, Tag, TagEnd};

/// The Markdown extensions mdBook enables: a heading written in a table is still a heading.
fn markdown_options() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_HEADING_ATTRIBUTES
}

/// What a page offers and asks for: the ids of its headings and the targets of its links and
/// images (code spans and blocks hold no links).
#[derive(Debug, Default)]
struct Page {
    anchors: HashSet<String>,
    links: Vec<String>,
}

/// The id mdBook gives a heading (as GitHub does for the headings these pages use): lower case,
/// letters, digits, `_` and `-` kept, white space made `-`, everything else dropped.
fn heading_id(text: &str) -> String {
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|ch| {
            if ch.is_alphanumeric() || ch == '_' || ch == '-' {
                Some(ch)
            } else if ch.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

fn parse_page(markdown: &str) -> Page {
    let mut page = Page::default();
    // The text of the heading being read, and its explicit `{#id}` if it has one.
    let mut heading: Option<(String, Option<String>)> = None;
    for event in Parser::new_ext(markdown, markdown_options()) {
        match event {
            Event::Start(Tag::Heading { id, .. }) => {
                heading = Some((String::new(), id.map(|id| id.to_string())));
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((text, explicit)) = heading.take() {
                    let id = explicit.unwrap_or_else(|| heading_id(&text));
                    // A repeated heading gets -1, -2, ... as in mdBook and on GitHub.
                    let mut unique = id.clone();
                    let mut counter = 1;
                    while !page.anchors.insert(unique.clone()) {
                        unique = format!("{id}-{counter}");
                        counter += 1;
                    }
                }
            }
            Event::Text(text) | Event::Code(text) => {
                if let Some((heading_text, _)) = heading.as_mut() {
                    heading_text.push_str(&text);
                }
            }
            Event::Start(Tag::Link {
                link_type,
                dest_url,
                ..
            })
            | Event::Start(Tag::Image {
                link_type,
                dest_url,
                ..
            }) if !matches!(link_type, LinkType::Autolink | LinkType::Email) => {
                page.links.push(dest_url.to_string());
            }
            _ => {}
        }
    }
    page
}

/// A link that leaves the repository's files: a URL with a scheme, or a mail address.
fn is_external(link: &str) -> bool {
    let scheme_end = link.find(':');
    let path_start = link.find(['/', '#', '?']);
    match (scheme_end, path_start) {
        (Some(colon), Some(slash)) => colon < slash,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// `path` with `.` and `..` resolved without the file system (the target may not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    normal
}

/// The page at `path` (relative to `root`), parsed once.
fn read_page<'a>(
    parsed: &'a mut HashMap<PathBuf, Page>,
    root: &Path,
    path: &Path,
) -> Option<&'a Page> {
    if !parsed.contains_key(path) {
        let text = fs::read_to_string(root.join(path)).ok()?;
        parsed.insert(path.to_path_buf(), parse_page(&text));
    }
    parsed.get(path)
}

/// Every broken relative link of `pages` (paths relative to `root`), one message each. A page
/// inside `book` (the book's source folder) must link only to files inside it: the book holds
/// nothing else, and has no page for a folder.
fn broken_links(root: &Path, book: &Path, pages: &[PathBuf]) -> Vec<String> {
    let mut broken = Vec::new();
    let mut parsed = HashMap::new();
    for page_path in pages {
        let Some(page) = read_page(&mut parsed, root, page_path) else {
            broken.push(format!("{}: cannot be read", page_path.display()));
            continue;
        };
        for link in page.links.clone() {
            if is_external(&link) {
                continue;
            }
            let (file, fragment) = match link.split_once('#') {
                Some((file, fragment)) => (file, Some(fragment)),
                None => (link.as_str(), None),
            };
            let file = file.split('?').next().unwrap_or_default();
            let target = if file.is_empty() {
                page_path.clone()
            } else if file.starts_with('/') {
                broken.push(format!(
                    "{}: `{link}` is absolute; a relative link works on GitHub and in the book",
                    page_path.display()
                ));
                continue;
            } else {
                normalize(&page_path.parent().unwrap_or(Path::new("")).join(file))
            };
            let in_book = page_path.starts_with(book);
            if in_book && !target.starts_with(book) {
                broken.push(format!(
                    "{}: `{link}` leads out of {}/, which the book does not hold",
                    page_path.display(),
                    book.display()
                ));
                continue;
            }
            let full = root.join(&target);
            if !full.exists() {
                broken.push(format!(
                    "{}: `{link}`: {} does not exist",
                    page_path.display(),
                    target.display()
                ));
                continue;
            }
            if in_book && full.is_dir() {
                broken.push(format!(
                    "{}: `{link}` is a folder, which has no page in the book",
                    page_path.display()
                ));
                continue;
            }
            let Some(fragment) = fragment else { continue };
            if target.extension().is_none_or(|extension| extension != "md") {
                continue;
            }
            let Some(target_page) = read_page(&mut parsed, root, &target) else {
                broken.push(format!("{}: cannot be read", target.display()));
                continue;
            };
            if !target_page.anchors.contains(fragment) {
                let mut known: Vec<_> = target_page.anchors.iter().cloned().collect();
                known.sort();
                broken.push(format!(
                    "{}: `{link}`: {} has no heading with id `{fragment}` (it has: {})",
                    page_path.display(),
                    target.display(),
                    known.join(", ")
                ));
            }
        }
    }
    broken
}

/// The Markdown files under `folder` (relative to `root`), sorted.
fn markdown_files(root: &Path, folder: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(root.join(&dir))
            .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()));
        for entry in entries {
            let entry = entry.expect("a folder entry");
            let path = dir.join(entry.file_name());
            if entry.file_type().expect("a file type").is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The pages of `book` that its `SUMMARY.md` does not link to.
fn pages_missing_from_summary(root: &Path, book: &Path) -> Vec<PathBuf> {
    let summary_path = book.join("SUMMARY.md");
    let summary = fs::read_to_string(root.join(&summary_path))
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", summary_path.display()));
    let listed: BTreeSet<PathBuf> = parse_page(&summary)
        .links
        .iter()
        .map(|link| normalize(&book.join(link.split('#').next().unwrap_or_default())))
        .collect();
    markdown_files(root, book)
        .into_iter()
        .filter(|page| *page != summary_path && !listed.contains(page))
        .collect()
}

fn workspace() -> PathBuf {
    ipc_grader::workspace_root().expect("the tests run in an ipc-labs workspace")
}

#[test]
fn every_relative_link_of_the_docs_and_the_readme_resolves() {
    let root = workspace();
    let book = Path::new("docs");
    let mut pages = vec![PathBuf::from("README.md")];
    pages.extend(markdown_files(&root, book));
    assert!(pages.len() > 10, "too few pages found: {pages:?}");
    let broken = broken_links(&root, book, &pages);
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_summary_lists_every_page_of_the_book() {
    let root = workspace();
    let missing = pages_missing_from_summary(&root, Path::new("docs"));
    assert!(
        missing.is_empty(),
        "docs/SUMMARY.md does not list these pages, so the book leaves them out: {missing:?}"
    );
}

/// A small tree of pages to try the checker on.
fn sample_tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder");
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().expect("a parent")).expect("a folder");
        fs::write(path, text).expect("a page");
    }
    dir
}

fn check_sample(files: &[(&str, &str)]) -> Vec<String> {
    let dir = sample_tree(files);
    let book = Path::new("docs");
    let mut pages = vec![PathBuf::from("README.md")];
    pages.extend(markdown_files(dir.path(), book));
    broken_links(dir.path(), book, &pages)
}

#[test]
fn good_links_pass() {
    let broken = check_sample(&[
        (
            "README.md",
            "See [the guide](docs/guide.md#the-cleanup-check) and [labs](docs/labs/).",
        ),
        (
            "docs/guide.md",
            "# Guide\n\n## The `cleanup` check\n\n[lab 1](labs/one.md#rubric), [here](#guide), \
             [picture](labs/one.svg), [web](https://example.org/x.md#nothing), <mailto:a@b.c>\n",
        ),
        (
            "docs/labs/one.md",
            "# One\n\n## Rubric\n\n[back](../guide.md)\n",
        ),
        ("docs/labs/one.svg", "<svg/>"),
    ]);
    assert!(broken.is_empty(), "{broken:?}");
}

#[test]
fn a_missing_file_is_reported() {
    let broken = check_sample(&[
        ("README.md", "[gone](docs/gone.md)"),
        ("docs/guide.md", "![picture](img/missing.svg)"),
    ]);
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(
        broken[0].contains("docs/gone.md does not exist"),
        "{broken:?}"
    );
    assert!(
        broken[1].contains("docs/img/missing.svg does not exist"),
        "{broken:?}"
    );
}

#[test]
fn a_missing_anchor_is_reported() {
    let broken = check_sample(&[
        ("README.md", "[rubric](docs/one.md#rubrics)"),
        (
            "docs/one.md",
            "# One\n\n## Rubric\n\n[self](#no-such-heading)\n",
        ),
    ]);
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(
        broken[0].contains("no heading with id `rubrics`"),
        "{broken:?}"
    );
    assert!(
        broken[1].contains("no heading with id `no-such-heading`"),
        "{broken:?}"
    );
}

#[test]
fn a_book_page_linking_out_of_the_book_or_to_a_folder_is_reported() {
    let broken = check_sample(&[
        ("README.md", "# Readme"),
        (
            "docs/guide.md",
            "[readme](../README.md), [labs](labs/), [abs](/docs/guide.md)",
        ),
        ("docs/labs/one.md", "# One"),
    ]);
    assert_eq!(broken.len(), 3, "{broken:?}");
    assert!(broken[0].contains("leads out of docs/"), "{broken:?}");
    assert!(broken[1].contains("is a folder"), "{broken:?}");
    assert!(broken[2].contains("is absolute"), "{broken:?}");
}

#[test]
fn heading_ids_follow_the_renderer() {
    let page = parse_page(
        "# Lab 4: SysV shared memory\n\n## The `cleanup` check\n\n## Hints\n\n## Hints\n\n\
         ## Named {#own-id}\n\n```\n## not a heading\n[not a link](nowhere.md)\n```\n",
    );
    let mut anchors: Vec<_> = page.anchors.into_iter().collect();
    anchors.sort();
    assert_eq!(
        anchors,
        [
            "hints",
            "hints-1",
            "lab-4-sysv-shared-memory",
            "own-id",
            "the-cleanup-check"
        ]
    );
    assert!(page.links.is_empty(), "{:?}", page.links);
}

#[test]
fn a_page_left_out_of_the_summary_is_reported() {
    let dir = sample_tree(&[
        (
            "docs/SUMMARY.md",
            "# Summary\n\n- [Guide](guide.md)\n- [One](labs/one.md)\n",
        ),
        ("docs/guide.md", "# Guide"),
        ("docs/labs/one.md", "# One"),
        ("docs/labs/two.md", "# Two"),
    ]);
    assert_eq!(
        pages_missing_from_summary(dir.path(), Path::new("docs")),
        [PathBuf::from("docs/labs/two.md")]
    );
}
