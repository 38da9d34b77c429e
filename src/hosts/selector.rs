//! Host selectors: `all`, `@tag`, `a,b` (and mixes such as `@web,db1`), as written in a
//! block's `hosts=` and in `run --hosts`. Parsing and resolving against an inventory; no I/O.

use crate::hosts::inventory::{Host, Inventory};

/// One element of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    All,
    Tag(String),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub items: Vec<Item>,
    pub text: String,
}

/// Why a text is not a selector, whatever the inventory: the one definition of a
/// well-formed selector, for a block's `hosts=` (`check` and the parser), `run --hosts` and
/// the hosts an argument names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// An entry between commas is empty (`a,,b`, `a,`).
    EmptyEntry,
    /// `@` without the tag's name.
    TagWithoutName,
}

impl Malformed {
    /// What is wrong, naming the selector as `shown`: `hosts=…` in a block's attributes, the
    /// text itself elsewhere.
    pub fn message(self, shown: &str) -> String {
        match self {
            Malformed::EmptyEntry => format!("`{shown}` has an empty entry"),
            Malformed::TagWithoutName => format!("`{shown}`: `@` needs a tag name"),
        }
    }

    /// What to write instead, in a block's `hosts=`.
    pub fn hint(self) -> &'static str {
        match self {
            Malformed::EmptyEntry => "write hosts=all, hosts=@tag or hosts=a,b",
            Malformed::TagWithoutName => "write hosts=@tag, with the tag's name",
        }
    }
}

impl Selector {
    /// The selector `text` writes: entries separated by commas, each `all` (or `*`), `@tag`
    /// or a host's name, spaces around them ignored. The first malformed entry, in the
    /// order written, is the error.
    pub fn parse(text: &str) -> Result<Selector, Malformed> {
        let mut items = Vec::new();
        for part in text.split(',').map(str::trim) {
            let item = match part {
                "" => return Err(Malformed::EmptyEntry),
                "all" | "*" => Item::All,
                tag if tag.starts_with('@') => {
                    let t = &tag[1..];
                    if t.is_empty() {
                        return Err(Malformed::TagWithoutName);
                    }
                    Item::Tag(t.to_string())
                }
                name => Item::Name(name.to_string()),
            };
            items.push(item);
        }
        Ok(Selector {
            items,
            text: text.to_string(),
        })
    }

    /// The selected hosts, in inventory order. Unknown names and tags that match no host are
    /// errors: a typo must not silently shrink a deploy.
    pub fn resolve<'a>(&self, inv: &'a Inventory) -> Result<Vec<&'a Host>, String> {
        let mut chosen = vec![false; inv.hosts.len()];
        for item in &self.items {
            match item {
                Item::All => chosen.iter_mut().for_each(|c| *c = true),
                Item::Tag(tag) => {
                    let mut any = false;
                    for (i, h) in inv.hosts.iter().enumerate() {
                        if h.tags.iter().any(|t| t == tag) {
                            chosen[i] = true;
                            any = true;
                        }
                    }
                    if !any {
                        return Err(format!("no host has the tag `{tag}`"));
                    }
                }
                Item::Name(name) => match inv.hosts.iter().position(|h| &h.name == name) {
                    Some(i) => chosen[i] = true,
                    None => {
                        let hint = crate::suggest::closest(name, inv.names())
                            .map(|s| format!(" (did you mean `{s}`?)"))
                            .unwrap_or_default();
                        return Err(format!("no host named `{name}` in the inventory{hint}"));
                    }
                },
            }
        }
        Ok(inv
            .hosts
            .iter()
            .zip(chosen)
            .filter_map(|(h, c)| c.then_some(h))
            .collect())
    }
}

/// The hosts a block runs on: its own selector, narrowed by `--hosts` when given.
pub fn hosts_for<'a>(
    block_selector: &str,
    filter: Option<&str>,
    inv: &'a Inventory,
) -> Result<Vec<&'a Host>, String> {
    if inv.hosts.is_empty() {
        return Err(match &inv.path {
            Some(p) => format!("the inventory ({p}) has no hosts"),
            None => "there is no inventory: no nixcmd.toml with [hosts.NAME] tables and no flake with nixosConfigurations".to_string(),
        });
    }
    let parse = |text: &str| Selector::parse(text).map_err(|m| m.message(text));
    let own = parse(block_selector)?.resolve(inv)?;
    let Some(filter) = filter else {
        return Ok(own);
    };
    let narrowed = parse(filter)?.resolve(inv)?;
    Ok(own
        .into_iter()
        .filter(|h| narrowed.iter().any(|n| n.name == h.name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::inventory::{DEFAULT_CONNECT_TIMEOUT, Source};

    fn inv() -> Inventory {
        let host = |name: &str, tags: &[&str]| Host {
            name: name.into(),
            target: format!("root@{name}"),
            port: None,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            ssh_options: Vec::new(),
            local: false,
        };
        Inventory {
            source: Source::Config,
            path: None,
            hosts: vec![
                host("web1", &["web"]),
                host("web2", &["web"]),
                host("db1", &["db"]),
            ],
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            secrets: Vec::new(),
            diagnostics: Vec::new(),
            file: None,
        }
    }

    fn names(sel: &str, filter: Option<&str>) -> Result<Vec<String>, String> {
        let inv = inv();
        hosts_for(sel, filter, &inv).map(|hs| hs.iter().map(|h| h.name.clone()).collect())
    }

    #[test]
    fn selects_all_tags_and_names_in_inventory_order() {
        assert_eq!(names("all", None).unwrap(), ["web1", "web2", "db1"]);
        assert_eq!(names("@web", None).unwrap(), ["web1", "web2"]);
        assert_eq!(names("db1,web1", None).unwrap(), ["web1", "db1"]);
        assert_eq!(names("@db,web2", None).unwrap(), ["web2", "db1"]);
    }

    #[test]
    fn filter_narrows() {
        assert_eq!(names("all", Some("@web")).unwrap(), ["web1", "web2"]);
        assert_eq!(names("@db", Some("web1")).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn typos_are_errors() {
        assert_eq!(
            names("web3", None).unwrap_err(),
            "no host named `web3` in the inventory (did you mean `web2`?)"
        );
        assert_eq!(
            names("@app", None).unwrap_err(),
            "no host has the tag `app`"
        );
        assert!(names("a,,b", None).is_err());
    }

    /// Each malformed form, and the first malformed entry as written when there are two.
    #[test]
    fn malformed_selectors_are_refused_with_what_is_wrong() {
        for (text, why) in [
            ("a,,b", Malformed::EmptyEntry),
            ("a,", Malformed::EmptyEntry),
            (",", Malformed::EmptyEntry),
            ("", Malformed::EmptyEntry),
            (" , a", Malformed::EmptyEntry),
            ("@", Malformed::TagWithoutName),
            ("web1, @ ", Malformed::TagWithoutName),
            ("@,,a", Malformed::TagWithoutName),
            ("a,,@", Malformed::EmptyEntry),
        ] {
            assert_eq!(Selector::parse(text), Err(why), "{text:?}");
        }
        assert_eq!(
            Malformed::EmptyEntry.message("hosts=a,,b"),
            "`hosts=a,,b` has an empty entry"
        );
        assert_eq!(
            Malformed::TagWithoutName.message("@"),
            "`@`: `@` needs a tag name"
        );
        assert_eq!(
            names("@,b", None).unwrap_err(),
            "`@,b`: `@` needs a tag name"
        );
    }
}
