//! Reading `FileResolver`'s search paths and patterns back (its fields are private), so that
//! `PackResolver` probes exactly as it does.

use rquickjs::loader::FileResolver;

/// `FileResolver`'s configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Config {
    pub(super) paths: Vec<String>,
    pub(super) patterns: Vec<String>,
}

impl Config {
    /// Reads `FileResolver`'s search paths and patterns back from its `Debug` output (its
    /// fields are private), and checks the reading by rebuilding an equal resolver.
    pub(super) fn of(resolver: &FileResolver) -> Option<Config> {
        let text = format!("{resolver:?}");
        let config = Config {
            paths: debug_string_list(&text, "paths: [")?,
            patterns: debug_string_list(&text, "patterns: [")?,
        };
        let (first, rest) = config.patterns.split_first()?;
        let rebuilt = rest.iter().fold(
            FileResolver::default().with_paths(config.paths.iter().map(String::as_str)),
            |r, p| r.with_pattern(p.as_str()),
        );
        (first == "{}.js" && format!("{rebuilt:?}") == text).then_some(config)
    }
}

/// The strings of the `Debug`-printed list that starts after `label`.
fn debug_string_list(text: &str, label: &str) -> Option<Vec<String>> {
    let mut rest = &text[text.find(label)? + label.len()..];
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix(']') {
            let _ = after;
            return Some(out);
        }
        rest = rest.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (at, c) = chars.next()?;
            match c {
                '"' => break at + 1,
                '\\' => {
                    let (_, e) = chars.next()?;
                    value.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '0' => '\0',
                        '\\' | '"' | '\'' => e,
                        // \u{...}: anything else makes the reading fail the rebuild check.
                        _ => return None,
                    });
                }
                c => value.push(c),
            }
        };
        out.push(value);
        rest = &rest[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_resolver_settings_are_read_back_exactly() {
        let resolver = FileResolver::default()
            .with_path(".")
            .with_path("lib/\"quoted\"\\dir")
            .with_pattern("{}.mjs")
            .with_pattern("{}/index.js");
        let config = Config::of(&resolver).expect("readable");
        assert_eq!(config.paths, [".", "lib/\"quoted\"\\dir"]);
        assert_eq!(config.patterns, ["{}.js", "{}.mjs", "{}/index.js"]);
        assert_eq!(
            Config::of(&FileResolver::default()).unwrap().paths,
            Vec::<String>::new()
        );
    }
}
