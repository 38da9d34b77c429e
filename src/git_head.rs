//! The commit a folder's git work tree has checked out, read from the repository's files
//! instead of starting `git rev-parse HEAD`: every run records it in `state.json`, and starting
//! git (a few milliseconds) was a noticeable part of a short run. Only the plain layouts are
//! read here — a `.git` folder or `gitdir:` file, loose refs, `packed-refs`, linked work trees
//! (`commondir`); anything else (git's environment variables, reftable, a repository owned by
//! someone else, one on another file system) answers [`Head::Ask`], and the caller asks git.

use std::path::{Path, PathBuf};

/// What the files say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// The full hex id of the commit checked out.
    Commit(String),
    /// No work tree around the folder, or a branch without commits: git has no answer either.
    None,
    /// A layout this reader does not handle: ask git.
    Ask,
}

/// Symbolic refs followed before giving up (git's own limit is 5).
const MAX_SYMREF_DEPTH: usize = 5;

pub fn head(dir: &Path) -> Head {
    // These change where git looks, or whether it looks further up.
    const GIT_VARS: [&str; 6] = [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_COMMON_DIR",
        "GIT_CEILING_DIRECTORIES",
        "GIT_DISCOVERY_ACROSS_FILESYSTEM",
        "GIT_INDEX_FILE",
    ];
    if GIT_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
        return Head::Ask;
    }
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return Head::Ask;
    };
    match find_git_dir(&dir) {
        Found::GitDir(git_dir) => read_head(&git_dir),
        Found::Nothing => Head::None,
        Found::Unsure => Head::Ask,
    }
}

enum Found {
    GitDir(PathBuf),
    Nothing,
    Unsure,
}

/// The repository folder of the work tree around `dir`, walking up as git does.
fn find_git_dir(dir: &Path) -> Found {
    use std::os::unix::fs::MetadataExt;
    let Ok(start) = std::fs::metadata(dir) else {
        return Found::Unsure;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    for folder in dir.ancestors() {
        // Inside a repository folder itself, git answers differently (a bare view).
        if folder.file_name().is_some_and(|n| n == ".git") {
            return Found::Unsure;
        }
        let dot_git = folder.join(".git");
        let Ok(meta) = std::fs::symlink_metadata(&dot_git) else {
            continue;
        };
        // git stops at file system boundaries, and refuses repositories owned by someone else
        // (`safe.directory`): leave both to it.
        if meta.dev() != start.dev() || meta.uid() != euid {
            return Found::Unsure;
        }
        if meta.is_dir() {
            return Found::GitDir(dot_git);
        }
        if meta.is_file() {
            // A submodule or a linked work tree: `gitdir: PATH`.
            let Ok(text) = std::fs::read_to_string(&dot_git) else {
                return Found::Unsure;
            };
            let Some(target) = text.strip_prefix("gitdir: ").map(str::trim_end) else {
                return Found::Unsure;
            };
            if target.is_empty() {
                return Found::Unsure;
            }
            return Found::GitDir(folder.join(target));
        }
        return Found::Unsure;
    }
    Found::Nothing
}

fn read_head(git_dir: &Path) -> Head {
    if git_dir.join("reftable").exists() {
        return Head::Ask;
    }
    // Refs of a linked work tree live in the main repository's folder.
    let common = match std::fs::read_to_string(git_dir.join("commondir")) {
        Ok(rel) => git_dir.join(rel.trim_end()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => git_dir.to_path_buf(),
        Err(_) => return Head::Ask,
    };
    let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD")) else {
        return Head::Ask;
    };
    let mut value = head.trim_end().to_string();
    for _ in 0..MAX_SYMREF_DEPTH {
        let Some(name) = value.strip_prefix("ref: ").map(str::to_string) else {
            return if is_object_id(&value) {
                Head::Commit(value)
            } else {
                Head::Ask
            };
        };
        if !name.starts_with("refs/") || name.split('/').any(|p| p.is_empty() || p == "..") {
            return Head::Ask;
        }
        // Per-worktree refs (`refs/bisect/…`, `refs/worktree/…`) live beside HEAD.
        let loose = [git_dir.join(&name), common.join(&name)];
        let mut next = None;
        for path in loose.iter() {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    next = Some(text.trim_end().to_string());
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => return Head::Ask,
            }
        }
        value = match next {
            Some(v) => v,
            None => match packed_ref(&common, &name) {
                Ok(Some(id)) => return Head::Commit(id),
                // A branch with no commit yet: `git rev-parse HEAD` fails too.
                Ok(None) => return Head::None,
                Err(()) => return Head::Ask,
            },
        };
    }
    Head::Ask
}

/// `name`'s id in `packed-refs`: `Ok(None)` when it is not there (or there is no such file).
fn packed_ref(common: &Path, name: &str) -> Result<Option<String>, ()> {
    let text = match std::fs::read_to_string(common.join("packed-refs")) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) => return Err(()),
    };
    for line in text.lines() {
        if line.starts_with('#') || line.starts_with('^') {
            continue;
        }
        let Some((id, refname)) = line.split_once(' ') else {
            return Err(());
        };
        if refname == name {
            return if is_object_id(id) {
                Ok(Some(id.to_string()))
            } else {
                Err(())
            };
        }
    }
    Ok(None)
}

/// A full SHA-1 or SHA-256 object id in lower-case hex.
fn is_object_id(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git_available() -> bool {
        let ok = Command::new("git")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            assert!(
                std::env::var_os("NIXCMD_TEST_REQUIRE_ALL").is_none(),
                "git is required (NIXCMD_TEST_REQUIRE_ALL is set)"
            );
            eprintln!("skipped: git is not installed");
        }
        ok
    }

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.org")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.org")
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// What `git rev-parse HEAD` says, as a [`Head`].
    fn truth(dir: &Path) -> Head {
        let out = Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(dir)
            .output()
            .expect("git runs");
        if out.status.success() {
            Head::Commit(String::from_utf8(out.stdout).unwrap().trim().to_string())
        } else {
            Head::None
        }
    }

    #[test]
    fn agrees_with_git_on_every_plain_layout() {
        if !git_available() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let sub = repo.join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        // A branch with no commit yet.
        assert_eq!(head(&sub), Head::None);
        assert_eq!(truth(&sub), Head::None);
        std::fs::write(repo.join("f"), "1").unwrap();
        git(&repo, &["add", "f"]);
        git(&repo, &["commit", "-qm", "one"]);
        let first = git(&repo, &["rev-parse", "HEAD"]);
        // Loose ref, from the top and from a subfolder.
        assert_eq!(head(&repo), Head::Commit(first.clone()));
        assert_eq!(head(&sub), truth(&sub));
        // Packed refs only.
        git(&repo, &["pack-refs", "--all", "--prune"]);
        assert!(!repo.join(".git/refs/heads/main").exists());
        assert_eq!(head(&sub), Head::Commit(first.clone()));
        // A newer loose ref wins over the packed one.
        std::fs::write(repo.join("f"), "2").unwrap();
        git(&repo, &["commit", "-qam", "two"]);
        let second = git(&repo, &["rev-parse", "HEAD"]);
        assert_ne!(first, second);
        assert_eq!(head(&sub), Head::Commit(second.clone()));
        // Detached HEAD.
        git(&repo, &["checkout", "-q", "--detach", &first]);
        assert_eq!(head(&sub), Head::Commit(first.clone()));
        git(&repo, &["checkout", "-q", "main"]);
        // A linked work tree (`.git` file, `commondir`) on another branch.
        let wt = tmp.path().join("wt");
        git(
            &repo,
            &[
                "worktree",
                "add",
                "-q",
                "-b",
                "other",
                wt.to_str().unwrap(),
                &first,
            ],
        );
        assert!(wt.join(".git").is_file());
        assert_eq!(head(&wt), Head::Commit(first.clone()));
        assert_eq!(head(&wt), truth(&wt));
        // Outside any repository.
        let outside = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&outside).unwrap();
        if truth(&outside) == Head::None {
            assert_eq!(head(&outside), Head::None);
        }
        // Inside the repository folder itself: git's business.
        assert_eq!(head(&repo.join(".git")), Head::Ask);
    }

    #[test]
    fn unusual_files_are_left_to_git() {
        let tmp = tempfile::tempdir().unwrap();
        let git_dir = tmp.path().join(".git");
        std::fs::create_dir_all(git_dir.join("refs/heads")).unwrap();
        let id = "0123456789abcdef0123456789abcdef01234567";
        let cases: [(&str, Option<&str>, Head); 5] = [
            ("ref: refs/heads/main\n", Some(id), Head::Commit(id.into())),
            ("ref: refs/heads/main\n", Some("not an id"), Head::Ask),
            ("ref: refs/heads/../../x\n", None, Head::Ask),
            ("ref: HEAD\n", None, Head::Ask),
            ("garbage\n", None, Head::Ask),
        ];
        for (head_text, main, want) in cases {
            std::fs::write(git_dir.join("HEAD"), head_text).unwrap();
            let main_path = git_dir.join("refs/heads/main");
            match main {
                Some(m) => std::fs::write(&main_path, m).unwrap(),
                None => {
                    let _ = std::fs::remove_file(&main_path);
                }
            }
            assert_eq!(read_head(&git_dir), want, "{head_text:?} {main:?}");
        }
        std::fs::create_dir_all(git_dir.join("reftable")).unwrap();
        assert_eq!(read_head(&git_dir), Head::Ask);
    }
}
