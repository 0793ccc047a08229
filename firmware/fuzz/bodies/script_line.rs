//! The body of the `script_line` fuzz target, shared with the stable seed and
//! property tests (`firmware/tests/fuzz.rs`): the simulator's script parser
//! answers every line, never panics, and what it answers is well formed.

use fewshot_firmware::sim::{parse_line, Command};

/// Checks one line.
pub fn check_line(line: &str) {
    let first = parse_line(line);
    assert_eq!(first, parse_line(line), "parsing {line:?} twice differs");
    match first {
        Ok(Some(Command::Frame(path))) => {
            assert!(
                !path.as_os_str().is_empty(),
                "{line:?}: frame with an empty path"
            );
        }
        Ok(_) => {}
        Err(message) => assert!(!message.is_empty(), "{line:?}: an empty error"),
    }
    if line.trim().is_empty() {
        assert_eq!(
            parse_line(line),
            Ok(None),
            "{line:?}: a blank line is nothing"
        );
    }
}

/// Checks the input as a script (each line, and the whole as one line), and
/// as lossy UTF-8 when it is not UTF-8.
pub fn run(data: &[u8]) {
    match std::str::from_utf8(data) {
        Ok(text) => {
            for line in text.lines() {
                check_line(line);
            }
            check_line(text);
        }
        Err(_) => check_line(&String::from_utf8_lossy(data)),
    }
}
