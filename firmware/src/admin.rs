//! The installer's commands to a door (parsed by [`fewshot_door::admin`],
//! re-exported here) and the board's admin pipe, read on a background thread.

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};

pub use fewshot_door::admin::*;

/// Reads admin lines from `path` on a background thread, so the door loop
/// never waits for them. A named pipe (`mkfifo`) is opened again each time
/// its writer closes it, so `echo "name Ada" > PATH` works any number of
/// times; a regular file is read once. A failure to open or read is sent as
/// an `Err` and the thread stops.
pub fn spawn_admin_reader(path: PathBuf) -> Receiver<Result<String, String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || loop {
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) => {
                let _ = tx.send(Err(format!("admin pipe {}: {e}", path.display())));
                return;
            }
        };
        for line in std::io::BufReader::new(file).lines() {
            let sent = match line {
                Ok(line) => tx.send(Ok(line)),
                Err(e) => {
                    let _ = tx.send(Err(format!("admin pipe {}: {e}", path.display())));
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
        if !is_fifo(&path) {
            return;
        }
    });
    rx
}

#[cfg(unix)]
fn is_fifo(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

#[cfg(not(unix))]
fn is_fifo(_: &std::path::Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_is_read_once() {
        let dir = std::env::temp_dir().join(format!("admin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("admin.txt");
        std::fs::write(&path, "name Ada\nlist\n").unwrap();
        let lines: Vec<_> = spawn_admin_reader(path.clone()).iter().collect();
        assert_eq!(
            lines,
            vec![Ok("name Ada".to_string()), Ok("list".to_string())]
        );
        let missing: Vec<_> = spawn_admin_reader(dir.join("none")).iter().collect();
        assert!(matches!(&missing[..], [Err(e)] if e.contains("none")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
