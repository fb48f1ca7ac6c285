//! What a launch needs, as plain data: the [`LaunchSpec`] the core decides and a containerizer runs, its
//! [`Limits`], the [`ImageRequest`] naming the image to run it in, and where the sandbox appears inside a container
//! ([`SANDBOX_MOUNT`]). This module imports nothing else of the agent: the core builds these values, the launcher
//! (`crate::launcher`) completes them (image resolved into `rootfs`, its config applied), and every containerizer,
//! `crate::image` and [`super::volumes`] read them.
//!
//! [`ImageRef::parse`] holds Docker's name grammar, so a reference that parses can never leave the registry
//! directory: NAME is one or more `/`-separated components of `[a-z0-9]` runs joined by single `.`, `_`, `__` or
//! `-` separators, TAG is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; digests (`@sha256:...`) and registry hosts with ports
//! are refused.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use agora_proto::model::{CommandInfo, Volume};

/// Where the sandbox appears inside a container (`$AGORA_SANDBOX`, `$MESOS_SANDBOX`).
pub const SANDBOX_MOUNT: &str = "/mnt/sandbox";

/// The hostname of every container (its own UTS namespace), also in a bridged container's `/etc/hosts`.
pub const CONTAINER_HOSTNAME: &str = "agora";

/// Everything needed to start one task's container.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchSpec {
    pub container_id: String,
    pub task_id: String,
    pub framework_id: String,
    pub command: CommandInfo,
    /// The complete environment of the task (nothing is inherited beyond it).
    pub env: Vec<(String, String)>,
    /// Created by the agent before `launch`; the working directory, holding `stdout` and `stderr`.
    pub sandbox: PathBuf,
    /// What the task may use: `cpus`, `mem` (MB) and `disk` (MB) become limits where the containerizer isolates.
    pub limits: Limits,
    /// The user to run as (CommandInfo's, else FrameworkInfo's); `None` keeps the agent's user.
    pub user: Option<String>,
    /// A root filesystem directory prepared on the agent (`container.rootfs`); `None` is the host's, read-only.
    pub rootfs: Option<PathBuf>,
    /// `container.image`, resolved into `rootfs` by the launcher before the containerizer sees the spec;
    /// containerizers ignore it.
    pub image: Option<ImageRequest>,
    /// `ContainerInfo.volumes`, bound into the container ([`super::volumes`]); only a containerizer that isolates
    /// the filesystem can honour them.
    pub volumes: Vec<Volume>,
    /// The working directory inside the container (an image's `WorkingDir`); `None` is the sandbox.
    pub working_dir: Option<PathBuf>,
    /// The container network the task joins; `None` is the host's network.
    pub network: Option<ContainerNetwork>,
}

/// A container network to join: the core's decision, completed by the launcher once the container is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerNetwork {
    pub name: String,
    /// The agent's subnet, where the address comes from.
    pub subnet: agora_net::Ipv4Cidr,
    pub hostname: String,
    pub attached: Option<AttachedNetwork>,
}

/// Where an attached container's network is: what the containerizer hands to the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedNetwork {
    pub ip: Ipv4Addr,
    /// The pinned network namespace the container joins.
    pub netns: PathBuf,
    /// Bound over the container's `/etc/resolv.conf` and `/etc/hosts`.
    pub resolv_conf: PathBuf,
    pub hosts: PathBuf,
}

/// A task's resource limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub cpus: Option<f64>,
    pub mem_bytes: Option<u64>,
    pub disk_bytes: Option<u64>,
}

/// Where to find an image and where to unpack it: the core's request, resolved by `crate::image::provision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRequest {
    /// The image as the task named it.
    pub image: String,
    pub reference: ImageRef,
    /// `--docker-registry`.
    pub registry: PathBuf,
    /// `<work_dir>/store/docker`.
    pub store: PathBuf,
}

/// A validated image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub name: String,
    pub tag: String,
}

/// An image name that does not follow Docker's grammar (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image '{image}' is not a valid image name: {why}")]
pub struct ImageNameError {
    pub image: String,
    pub why: BadImageName,
}

/// What is wrong with an image name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadImageName {
    #[error("digests are not supported; name a tag")]
    Digest,
    #[error("the name is empty")]
    EmptyName,
    #[error("'{0}' is not a name component (lowercase letters and digits, separated by '.', '_', '__' or '-')")]
    Component(String),
    #[error("'{0}' is not a tag ([A-Za-z0-9_][A-Za-z0-9_.-]*, at most 128 characters)")]
    Tag(String),
}

impl ImageRef {
    /// Validates `NAME[:TAG]` (TAG `latest` by default).
    pub fn parse(image: &str) -> Result<ImageRef, ImageNameError> {
        let bad = |why| Err(ImageNameError { image: image.to_string(), why });
        if image.contains('@') {
            return bad(BadImageName::Digest);
        }
        // The tag follows the last ':' that comes after the last '/'.
        let last_slash = image.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match image[last_slash..].rfind(':') {
            Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
            None => (image, "latest"),
        };
        if name.is_empty() {
            return bad(BadImageName::EmptyName);
        }
        if let Some(c) = name.split('/').find(|c| !valid_component(c)) {
            return bad(BadImageName::Component(c.to_string()));
        }
        if !valid_tag(tag) {
            return bad(BadImageName::Tag(tag.to_string()));
        }
        Ok(ImageRef { name: name.to_string(), tag: tag.to_string() })
    }

    /// `DIR/NAME/TAG`: a prepared root filesystem directory.
    pub fn directory_in(&self, registry: &Path) -> PathBuf {
        registry.join(&self.name).join(&self.tag)
    }

    /// `DIR/NAME/TAG.tar`: an image archive or a root filesystem tarball.
    pub fn tarball_in(&self, registry: &Path) -> PathBuf {
        registry.join(&self.name).join(format!("{}.tar", self.tag))
    }

    /// `DIR/NAME:TAG.tar`: the same, named as Mesos's local puller names it.
    pub fn mesos_tarball_in(&self, registry: &Path) -> PathBuf {
        registry.join(format!("{}:{}.tar", self.name, self.tag))
    }

    /// `STORE/NAME/TAG`: where an archive is unpacked (`rootfs/`, `config.json`).
    pub fn stored_in(&self, store: &Path) -> PathBuf {
        store.join(&self.name).join(&self.tag)
    }
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    // Separators: '.', '_', '__' or one or more '-', always between alphanumerics.
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let ok = |x: u8| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-';
    !t.is_empty()
        && t.len() <= 128
        && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
        && t.bytes().all(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> (String, String) {
        let r = ImageRef::parse(s).unwrap();
        (r.name, r.tag)
    }

    #[test]
    fn names_and_tags_parse_with_latest_by_default() {
        assert_eq!(parsed("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(parsed("busybox:1.36"), ("busybox".into(), "1.36".into()));
        assert_eq!(parsed("library/busy_box-x.y:v1_2-rc.3"), ("library/busy_box-x.y".into(), "v1_2-rc.3".into()));
        assert_eq!(parsed("a__b--c/d:_T"), ("a__b--c/d".into(), "_T".into()));
    }

    #[test]
    fn nothing_that_could_leave_the_registry_parses() {
        for bad in [
            "",
            ":tag",
            "..",
            "../etc",
            "a/../b",
            "/abs",
            "a//b",
            "a/",
            "./a",
            "Busybox",
            "a:..",
            "a:.x",
            "a:-x",
            "a:",
            "a:b/c",
            "a@sha256:abc",
            "host:5000/a",
            "a b",
            "a\0b",
            "a..b",
            "a_-b",
            "a:t\n",
        ] {
            let err = ImageRef::parse(bad).expect_err(bad).to_string();
            assert!(err.starts_with(&format!("image '{bad}' is not a valid image name")), "{err}");
        }
        assert!(ImageRef::parse(&format!("a:{}", "t".repeat(129))).is_err());
        assert!(ImageRef::parse(&format!("a:{}", "t".repeat(128))).is_ok());
        assert_eq!(
            ImageRef::parse("a@sha256:abc").unwrap_err().to_string(),
            "image 'a@sha256:abc' is not a valid image name: digests are not supported; name a tag"
        );
    }

    #[test]
    fn the_layout_is_name_then_tag() {
        let r = ImageRef::parse("library/busybox").unwrap();
        assert_eq!(r.directory_in(Path::new("/reg")), Path::new("/reg/library/busybox/latest"));
        assert_eq!(r.tarball_in(Path::new("/reg")), Path::new("/reg/library/busybox/latest.tar"));
        assert_eq!(r.mesos_tarball_in(Path::new("/reg")), Path::new("/reg/library/busybox:latest.tar"));
        assert_eq!(r.stored_in(Path::new("/w/store/docker")), Path::new("/w/store/docker/library/busybox/latest"));
    }
}
