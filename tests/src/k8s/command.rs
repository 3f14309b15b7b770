//! What a container runs, without images: stand-in for the container runtime's
//! image store and entrypoint resolution.
//!
//! There is no container runtime here and so no image filesystem. An image is
//! mapped to a binary this repository built: the image's last path component
//! without tag or digest (`ghcr.io/x/raftkv:0.1.0` -> `raftkv`) names the
//! entrypoint binary in `--bin-dir`, standing for the Dockerfile's `ENTRYPOINT`.
//! The argv then follows Kubernetes' rules: `command` replaces the entrypoint,
//! `args` replace the image's CMD (which is empty for every image we map).
//! Programs are looked up on the pod's PATH (`--bin-dir` first, then
//! `/usr/local/bin:/usr/bin:/bin`), so `command: ["/bin/sh", "-c", ...]` and
//! `command: ["raftkv-operator"]` both work. A second version of an image is
//! a directory of its own, `--bin-dir/images/<image, "/" and ":" as "_">/`
//! (a test copies a build there): when it exists, a container of that image
//! finds its programs there first, standing for that image's filesystem, so
//! a rollout from one image to another changes the binary a member runs.
//! What this does not do: pull, verify digests, or give the process the
//! image's root filesystem or user.

use k8s_openapi::api::core::v1::Container;
use std::path::{Path, PathBuf};

/// The directories searched after `--bin-dir`, as in a typical image's PATH.
pub const SYSTEM_PATH: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin"];

/// The binary name an image stands for: its last path component without tag or digest.
pub fn image_binary(image: &str) -> Option<String> {
    let without_digest = image.split('@').next().unwrap_or("");
    let last = without_digest.rsplit('/').next().unwrap_or("");
    let name = last.split(':').next().unwrap_or("");
    if name.is_empty() {
        None
    } else {
        Some(name.to_string())
    }
}

/// The directory standing for one image's own binaries (see the module docs).
pub fn image_dir(bin_dir: &Path, image: &str) -> PathBuf {
    bin_dir
        .join("images")
        .join(image.replace(['/', ':', '@'], "_"))
}

/// A container's PATH: its image's directory first, when there is one.
pub fn container_path(pod_path: &str, bin_dir: &Path, image: &str) -> String {
    let own = image_dir(bin_dir, image);
    if !image.is_empty() && own.is_dir() {
        format!("{}:{pod_path}", own.display())
    } else {
        pod_path.to_string()
    }
}

/// The pod's PATH value.
pub fn pod_path(bin_dir: &Path) -> String {
    std::iter::once(bin_dir.display().to_string())
        .chain(SYSTEM_PATH.iter().map(|s| s.to_string()))
        .collect::<Vec<_>>()
        .join(":")
}

/// Why a container cannot start: a kubelet-like reason and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError {
    pub reason: String,
    pub message: String,
}

impl StartError {
    pub fn new(reason: &str, message: impl Into<String>) -> StartError {
        StartError {
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// The argv of a container (before `$(VAR)` expansion), per Kubernetes' rules.
pub fn container_argv(container: &Container) -> Result<Vec<String>, StartError> {
    let command = container.command.clone().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    if !command.is_empty() {
        return Ok(command.into_iter().chain(args).collect());
    }
    let image = container.image.as_deref().unwrap_or("");
    let Some(entrypoint) = image_binary(image) else {
        return Err(StartError::new(
            "InvalidImageName",
            format!(
                "container {:?} has no usable image {image:?}",
                container.name
            ),
        ));
    };
    Ok(std::iter::once(entrypoint).chain(args).collect())
}

/// The executable for `program` on the pod's PATH, or why it has none.
pub fn resolve_program(
    program: &str,
    bin_dir: &Path,
    image: &str,
    exists: impl Fn(&Path) -> bool,
) -> Result<PathBuf, StartError> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return if exists(&path) {
            Ok(path)
        } else {
            Err(StartError::new(
                "ErrImagePull",
                format!("image {image:?}: no executable {program} on this machine (the stand-in runs pods as local processes)"),
            ))
        };
    }
    let own = (!image.is_empty()).then(|| image_dir(bin_dir, image));
    let dirs = own
        .into_iter()
        .chain(std::iter::once(bin_dir.to_path_buf()))
        .chain(SYSTEM_PATH.iter().map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(program);
        if exists(&candidate) {
            return Ok(candidate);
        }
    }
    Err(StartError::new(
        "ErrImagePull",
        format!(
            "image {image:?}: no binary {program:?} in {} or {} (the stand-in maps an image to a binary this repo built; build it first)",
            bin_dir.display(),
            SYSTEM_PATH.join(":")
        ),
    ))
}

/// Whether `path` is an executable regular file.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Kubernetes' `$(VAR)` expansion of command and args: `$(VAR)` is replaced by
/// the variable's value when defined, `$$` escapes a `$`, anything else stays.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let lookup = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);
    let mut out = String::new();
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match lookup(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(image: &str, command: &[&str], args: &[&str]) -> Container {
        let strings = |v: &[&str]| {
            if v.is_empty() {
                None
            } else {
                Some(v.iter().map(|s| s.to_string()).collect())
            }
        };
        Container {
            name: "c".into(),
            image: Some(image.into()),
            command: strings(command),
            args: strings(args),
            ..Container::default()
        }
    }

    #[test]
    fn image_names_map_to_binaries() {
        assert_eq!(
            image_binary("ghcr.io/x/raftkv:0.1.0").as_deref(),
            Some("raftkv")
        );
        assert_eq!(
            image_binary("localhost:5000/raftkv-operator@sha256:abc").as_deref(),
            Some("raftkv-operator")
        );
        assert_eq!(image_binary("raftkv").as_deref(), Some("raftkv"));
        assert_eq!(
            image_binary("reg:5000/a/b/c:tag@sha256:1").as_deref(),
            Some("c")
        );
        assert_eq!(image_binary(""), None);
        assert_eq!(image_binary("x/"), None);
    }

    #[test]
    fn command_replaces_entrypoint_and_args_replace_cmd() {
        let c = container("ghcr.io/x/raftkv:1", &[], &["serve", "--join"]);
        assert_eq!(container_argv(&c).unwrap(), ["raftkv", "serve", "--join"]);
        let c = container("ghcr.io/x/raftkv:1", &["raftkv-operator"], &["run"]);
        assert_eq!(container_argv(&c).unwrap(), ["raftkv-operator", "run"]);
        let c = container("raftkv", &["/bin/sh", "-c"], &["exec raftkv serve"]);
        assert_eq!(
            container_argv(&c).unwrap(),
            ["/bin/sh", "-c", "exec raftkv serve"]
        );
        let c = container("", &[], &[]);
        assert_eq!(container_argv(&c).unwrap_err().reason, "InvalidImageName");
    }

    #[test]
    fn an_image_with_a_directory_of_its_own_finds_its_programs_there_first() {
        let bin = Path::new("/b");
        assert_eq!(
            image_dir(bin, "ghcr.io/x/raftkv:0.2.0"),
            Path::new("/b/images/ghcr.io_x_raftkv_0.2.0")
        );
        let have = |p: &Path| {
            p == Path::new("/b/raftkv") || p == Path::new("/b/images/raftkv_0.2.0/raftkv")
        };
        assert_eq!(
            resolve_program("raftkv", bin, "raftkv:0.2.0", have).unwrap(),
            Path::new("/b/images/raftkv_0.2.0/raftkv")
        );
        assert_eq!(
            resolve_program("raftkv", bin, "raftkv:0.1.0", have).unwrap(),
            Path::new("/b/raftkv")
        );
        // No such directory on this machine: the pod's PATH as it is.
        assert_eq!(
            container_path("/b:/bin", Path::new("/nonexistent"), "raftkv:0.2.0"),
            "/b:/bin"
        );
    }

    #[test]
    fn programs_resolve_on_the_pod_path_bin_dir_first() {
        let bin = Path::new("/b");
        let have = |p: &Path| p == Path::new("/b/raftkv") || p == Path::new("/usr/bin/raftkv");
        assert_eq!(
            resolve_program("raftkv", bin, "i", have).unwrap(),
            Path::new("/b/raftkv")
        );
        let have = |p: &Path| p == Path::new("/bin/sh");
        assert_eq!(
            resolve_program("sh", bin, "i", have).unwrap(),
            Path::new("/bin/sh")
        );
        assert_eq!(
            resolve_program("/bin/sh", bin, "i", have).unwrap(),
            Path::new("/bin/sh")
        );
        let err = resolve_program("nginx", bin, "nginx:1.27", have).unwrap_err();
        assert_eq!(err.reason, "ErrImagePull");
        assert!(err.message.contains("\"nginx\""), "{}", err.message);
        assert!(err.message.contains("/b"), "{}", err.message);
    }

    #[test]
    fn dollar_paren_expansion_follows_kubernetes() {
        let env = vec![
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "two".to_string()),
        ];
        assert_eq!(expand("x$(A)y$(B)", &env), "x1ytwo");
        assert_eq!(expand("$(MISSING)", &env), "$(MISSING)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("${A} $A $(A", &env), "${A} $A $(A");
        assert_eq!(pod_path(Path::new("/b")), "/b:/usr/local/bin:/usr/bin:/bin");
    }
}
