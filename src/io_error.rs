//! How an I/O error is told to people: the kinds they meet in nixcmd's messages in plain
//! words (`permission denied`, not `Permission denied (os error 13)`), the others as the
//! system says them. No I/O.

/// What a path that names nothing was expected to be: the words for "not found".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    File,
    Folder,
    /// Either, as for a path nixcmd creates under its state folder.
    FileOrFolder,
}

/// Why an operation on a path failed, in words that follow "cannot read PATH: ".
pub fn why(e: &std::io::Error, expected: Expected) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::PermissionDenied => "permission denied".to_string(),
        ErrorKind::NotFound => match expected {
            Expected::File => "no such file",
            Expected::Folder => "no such folder",
            Expected::FileOrFolder => "no such file or folder",
        }
        .to_string(),
        ErrorKind::ReadOnlyFilesystem => "read-only file system".to_string(),
        ErrorKind::NotADirectory => "a file is in the way of a folder".to_string(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_kinds_are_told_in_plain_words_others_as_the_system_says() {
        let os = std::io::Error::from_raw_os_error;
        assert_eq!(why(&os(libc::EACCES), Expected::File), "permission denied");
        assert_eq!(why(&os(libc::ENOENT), Expected::File), "no such file");
        assert_eq!(why(&os(libc::ENOENT), Expected::Folder), "no such folder");
        assert_eq!(
            why(&os(libc::ENOENT), Expected::FileOrFolder),
            "no such file or folder"
        );
        assert_eq!(
            why(&os(libc::EROFS), Expected::File),
            "read-only file system"
        );
        assert_eq!(
            why(&os(libc::ENOTDIR), Expected::Folder),
            "a file is in the way of a folder"
        );
        assert_eq!(
            why(&os(libc::EISDIR), Expected::File),
            "Is a directory (os error 21)"
        );
    }
}
