//! The installer's commands to a door: name the next enrollment, list who is
//! enrolled, delete someone by name. The simulator's script and the board's
//! admin pipe take the same lines:
//!
//! | line | effect |
//! | --- | --- |
//! | `name <text>` | the next enrollment gets this name; if someone already has it, the frames are added to that person |
//! | `list` | an [`crate::events::Event::Roster`] of everyone enrolled |
//! | `delete <text>` | removes the person with this name |

use alloc::format;
use alloc::string::String;

use fewshot_core::{Name, NAME_CAP};

/// One installer's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin {
    /// Name the next enrollment (a new person, or more frames of this one).
    Name(Name),
    /// Report everyone enrolled.
    List,
    /// Delete the person with this name.
    Delete(Name),
}

/// Parses an admin command from its first word and the rest of the line;
/// `None` when `word` is not an admin command.
pub fn parse_admin(word: &str, rest: &str) -> Option<Result<Admin, String>> {
    let named = |what: &str| {
        if rest.is_empty() {
            return Err(format!("`{what}` takes a name"));
        }
        check_name(rest)
    };
    Some(match word {
        "name" => named("name").map(Admin::Name),
        "delete" => named("delete").map(Admin::Delete),
        "list" if rest.is_empty() => Ok(Admin::List),
        "list" => Err(format!("`list` takes nothing, got `{rest}`")),
        _ => return None,
    })
}

/// A command line's first word and the rest, trimmed, without its `#`
/// comment; `None` for a blank line or a comment (the script's and the admin
/// pipe's syntax).
pub fn split_line(line: &str) -> Option<(&str, &str)> {
    let line = line.split('#').next().unwrap_or("").trim();
    if line.is_empty() {
        return None;
    }
    Some(
        line.split_once(char::is_whitespace)
            .map(|(w, r)| (w, r.trim()))
            .unwrap_or((line, "")),
    )
}

/// Parses a whole admin line (the board's admin pipe); `Ok(None)` for blank
/// lines and `#` comments.
pub fn parse_admin_line(line: &str) -> Result<Option<Admin>, String> {
    let Some((word, rest)) = split_line(line) else {
        return Ok(None);
    };
    match parse_admin(word, rest) {
        Some(command) => command.map(Some),
        None => Err(format!(
            "unknown admin command `{word}` (expected name, list or delete)"
        )),
    }
}

/// Checks a person's name: 1 to [`NAME_CAP`] bytes of letters, digits,
/// spaces and `-_.'`, starting with a letter or digit, no space at either
/// end or two in a row.
pub fn check_name(text: &str) -> Result<Name, String> {
    if text.is_empty() || text.len() > NAME_CAP {
        return Err(format!(
            "a name is 1 to {NAME_CAP} bytes, `{text}` is {}",
            text.len()
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|&c| !(c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.' | '\'')))
    {
        return Err(format!(
            "a name has letters, digits, spaces and -_.' only; `{text}` has {c:?}"
        ));
    }
    if !text.starts_with(char::is_alphanumeric) || text.ends_with(' ') || text.contains("  ") {
        return Err(format!(
            "a name starts with a letter or digit and has no space at its end or two in a row: `{text}`"
        ));
    }
    Name::try_from(text).map_err(|_| format!("name `{text}` is too long"))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in [
            "Ada",
            "Ada Lovelace",
            "o'Neil",
            "Zoë-2",
            "x",
            "李雷",
            "a_b.c",
        ] {
            assert_eq!(check_name(good).unwrap().as_str(), good);
        }
        let long = "a".repeat(NAME_CAP + 1);
        for bad in [
            "", " Ada", "Ada ", "Ada  L", "-x", "a/b", "a\nb", "a\u{0}", &long,
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_name(&"é".repeat(16)).is_ok()); // 32 bytes
        assert!(check_name(&"é".repeat(17)).is_err()); // 34 bytes
    }

    #[test]
    fn commands_parse() {
        assert_eq!(
            parse_admin("name", "Ada L"),
            Some(Ok(Admin::Name(Name::try_from("Ada L").unwrap())))
        );
        assert_eq!(parse_admin("list", ""), Some(Ok(Admin::List)));
        assert!(parse_admin("list", "all").unwrap().is_err());
        assert!(parse_admin("name", "")
            .unwrap()
            .unwrap_err()
            .contains("takes a name"));
        assert!(parse_admin("delete", "a/b").unwrap().is_err());
        assert_eq!(parse_admin("frame", "x.png"), None);
        assert_eq!(parse_admin_line(" # x"), Ok(None));
        assert_eq!(parse_admin_line("list # all"), Ok(Some(Admin::List)));
        assert!(parse_admin_line("frame x.png")
            .unwrap_err()
            .contains("unknown admin command"));
    }
}
