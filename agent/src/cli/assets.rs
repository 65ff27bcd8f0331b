//! Man pages and shell completions generated from the command line itself,
//! so what a package installs always matches the binary it ships
//! (`airlock generate-assets DIR`, hidden from --help; `cargo xtask package`
//! runs it on the binary it packages).

use std::path::{Path, PathBuf};

use clap::CommandFactory as _;
use clap_complete::Shell;

/// Where generated files go inside the output directory.
pub const MAN_DIR: &str = "man";
/// Completion scripts, one per shell, inside the output directory.
pub const COMPLETIONS_DIR: &str = "completions";

/// The shells completions are generated for, with the file name each one's
/// completion loader looks for (bash-completion by command name, zsh by
/// `_command`, fish by `command.fish`).
const SHELLS: &[(Shell, &str)] = &[(Shell::Bash, "airlock"), (Shell::Zsh, "_airlock"), (Shell::Fish, "airlock.fish")];

/// A generated file that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AssetsError {
    /// Creating an output directory failed.
    #[error("creating {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing a man page or completion script failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Writes a man page for `airlock` and for every visible subcommand, at
/// any depth (`airlock-audit-verify.1`), under `dir/man`, and completion
/// scripts for bash, zsh and fish under `dir/completions`. Returns the
/// files written, in the order they were.
pub fn generate(dir: &Path) -> Result<Vec<PathBuf>, AssetsError> {
    let mut written = Vec::new();
    let man_dir = dir.join(MAN_DIR);
    create_dir(&man_dir)?;
    let mut command = super::Cli::command().disable_help_subcommand(true);
    command.build();
    write_man_pages(&command, &man_dir, &mut written)?;

    let completions_dir = dir.join(COMPLETIONS_DIR);
    create_dir(&completions_dir)?;
    let mut visible = without_hidden_subcommands(super::Cli::command());
    for (shell, file_name) in SHELLS {
        let path = completions_dir.join(file_name);
        let mut script = Vec::new();
        clap_complete::generate(*shell, &mut visible, "airlock", &mut script);
        std::fs::write(&path, script).map_err(|source| AssetsError::Write { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}

/// The page of `command`, then its visible subcommands' pages (hidden ones,
/// such as this generator, are tools for packagers, not for people).
fn write_man_pages(command: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<(), AssetsError> {
    let man = clap_mangen::Man::new(command.clone()).manual("Airlock Manual");
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page).map_err(|source| AssetsError::Write { path: path.clone(), source })?;
    std::fs::write(&path, page).map_err(|source| AssetsError::Write { path: path.clone(), source })?;
    written.push(path);
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_man_pages(sub, dir, written)?;
    }
    Ok(())
}

/// The command line as a person sees it: clap_complete offers hidden
/// subcommands too, and clap cannot remove one, so the top level is built
/// anew with the visible ones (the top level has no arguments of its own
/// besides --help and --version, which clap adds again).
fn without_hidden_subcommands(command: clap::Command) -> clap::Command {
    // The binary's name and version, as `#[command(name = "airlock", version)]` gives them.
    let mut visible = clap::Command::new("airlock")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(command.is_subcommand_required_set())
        .args(command.get_arguments().cloned())
        .subcommands(command.get_subcommands().filter(|sub| !sub.is_hide_set()).cloned());
    if let Some(about) = command.get_about() {
        visible = visible.about(about.clone());
    }
    visible
}

fn create_dir(path: &Path) -> Result<(), AssetsError> {
    std::fs::create_dir_all(path).map_err(|source| AssetsError::CreateDir { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(written: &[PathBuf]) -> Vec<String> {
        written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
    }

    /// Every subcommand the parser knows, at any depth, gets its page:
    /// walked from the same definition, so a subcommand added later is
    /// covered without anyone listing it.
    #[test]
    fn every_visible_subcommand_has_a_man_page() {
        let dir = tempfile::tempdir().unwrap();
        let written = generate(dir.path()).unwrap();
        let names = names(&written);
        fn expected(command: &clap::Command, prefix: &str, out: &mut Vec<String>) {
            for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
                let name = format!("{prefix}-{}", sub.get_name());
                out.push(format!("{name}.1"));
                expected(sub, &name, out);
            }
        }
        let mut want = vec!["airlock.1".to_owned()];
        expected(&crate::cli::Cli::command().disable_help_subcommand(true), "airlock", &mut want);
        for page in &want {
            assert!(names.contains(page), "no man page {page} in {names:?}");
        }
        assert!(names.contains(&"airlock-audit-verify.1".to_owned()));
        assert!(names.contains(&"airlock-agent.1".to_owned()));
        assert!(!names.iter().any(|n| n.contains("generate-assets")), "the hidden generator got a page: {names:?}");
        assert!(!names.iter().any(|n| n == "airlock-help.1"), "{names:?}");
    }

    /// A page is roff with the command's own words: its name, synopsis and
    /// the options' help text.
    #[test]
    fn man_pages_carry_the_help_text() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path()).unwrap();
        let page = std::fs::read_to_string(dir.path().join("man/airlock-audit-query.1")).unwrap();
        assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{page}");
        assert!(page.contains(".TH airlock-audit-query 1"), "{page}");
        assert!(page.contains("\\-\\-since"), "{page}");
        assert!(page.contains("Find records"), "{page}");
        let top = std::fs::read_to_string(dir.path().join("man/airlock.1")).unwrap();
        assert!(top.contains("airlock\\-status(1)"), "{top}");
    }

    /// Completions name the subcommands and their options, for each shell.
    #[test]
    fn completions_cover_subcommands_for_each_shell() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path()).unwrap();
        for (_, file_name) in SHELLS {
            let script = std::fs::read_to_string(dir.path().join(COMPLETIONS_DIR).join(file_name)).unwrap();
            assert!(script.contains("approvals"), "{file_name}");
            assert!(script.contains("token-file"), "{file_name}");
            assert!(!script.contains("generate-assets"), "{file_name} offers the hidden generator");
        }
    }

    #[test]
    fn an_unwritable_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let error = generate(&file).unwrap_err();
        assert!(matches!(error, AssetsError::CreateDir { .. }));
        assert!(error.to_string().contains("a-file"), "{error}");
    }
}
