//! Everything between the core's decision to launch a task and the containerizer's `launch`, as one step:
//! [`prepare`] creates the sandbox, fetches the task's URIs into it ([`crate::fetcher`]), provisions its image into a
//! root filesystem and applies the image's config ([`crate::image`]), and attaches a bridged task to the container
//! network ([`crate::network`]), last, so nothing that fails afterwards but the launch itself holds an address. Each failure is a [`LaunchError`] naming the
//! sandbox, the container and URI, or the image; the shell reports it as the task's TASK_FAILED with
//! [`LaunchError::reason`] and the error's text as the message (Mesos's wording: `Failed to fetch all URIs for
//! container '<id>': ...`). The decisions are the core's and the fetcher's and image module's; this is their order.

use std::path::PathBuf;

use agora_proto::model::Reason;
use tracing::info;

use crate::containerizer::ContainerError;
use crate::containerizer::spec::LaunchSpec;
use crate::fetcher::{FetchError, Fetcher};
use crate::image::ImageError;
use crate::network::{NetworkError, NetworkManager};

/// Why a task could not be launched.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot create sandbox {}: {source}", path.display())]
    Sandbox { path: PathBuf, source: std::io::Error },
    #[error("Failed to fetch all URIs for container '{container_id}': {source}")]
    Fetch { container_id: String, source: FetchError },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("task joins container network '{0}' but this agent runs none")]
    NoNetwork(String),
    #[error(transparent)]
    Container(#[from] ContainerError),
}

impl LaunchError {
    /// The reason of the task's TASK_FAILED: Mesos reports every failure to get a container going as
    /// `REASON_CONTAINER_LAUNCH_FAILED`.
    pub fn reason(&self) -> Reason {
        Reason::ContainerLaunchFailed
    }
}

/// The sandbox created and filled, and `spec` completed for the containerizer: with an image, its root filesystem
/// in `rootfs` and its config applied (command, environment, working directory, user); with a container network,
/// attached to it (`spec.network.attached`). A caller whose launch then fails detaches the container.
pub async fn prepare(
    mut spec: LaunchSpec,
    fetcher: &Fetcher,
    network: Option<&NetworkManager>,
) -> Result<LaunchSpec, LaunchError> {
    tokio::fs::create_dir_all(&spec.sandbox)
        .await
        .map_err(|source| LaunchError::Sandbox { path: spec.sandbox.clone(), source })?;
    fetcher
        .fetch_all(&spec.command.uris, &spec.sandbox)
        .await
        .map_err(|source| LaunchError::Fetch { container_id: spec.container_id.clone(), source })?;
    if let Some(request) = spec.image.clone() {
        let image = crate::image::provision(&request).await?;
        info!(image = %request.image, rootfs = %image.rootfs.display(), "image resolved");
        spec.rootfs = Some(image.rootfs);
        crate::image::apply_config(&request.image, &image.config, &mut spec)?;
    }
    if let Some(wanted) = spec.network.as_mut() {
        let manager = network.ok_or_else(|| LaunchError::NoNetwork(wanted.name.clone()))?;
        wanted.attached = Some(manager.attach(&spec.container_id, wanted).await?);
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use agora_proto::model::{CommandInfo, Uri};

    use super::*;
    use crate::containerizer::Limits;
    use crate::containerizer::spec::{ImageRef, ImageRequest};

    fn spec(sandbox: PathBuf) -> LaunchSpec {
        LaunchSpec {
            container_id: "c1".into(),
            task_id: "t".into(),
            framework_id: "f".into(),
            command: CommandInfo::shell("true"),
            env: vec![],
            sandbox,
            limits: Limits::default(),
            user: None,
            rootfs: None,
            image: None,
            volumes: vec![],
            working_dir: None,
            network: None,
        }
    }

    fn fetcher(dir: &std::path::Path) -> Fetcher {
        Fetcher::new(dir.join("cache"), crate::fetcher::DEFAULT_CACHE_SIZE, None)
    }

    #[tokio::test]
    async fn the_sandbox_is_created_and_filled_and_an_image_becomes_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("registry");
        std::fs::create_dir_all(registry.join("base/v1/etc")).unwrap();
        std::fs::write(dir.path().join("app.sh"), "echo").unwrap();
        let mut s = spec(dir.path().join("sandbox/run"));
        s.command.uris.push(Uri {
            value: dir.path().join("app.sh").display().to_string(),
            executable: true,
            extract: false,
            cache: false,
            output_file: String::new(),
        });
        s.image = Some(ImageRequest {
            image: "base:v1".into(),
            reference: ImageRef::parse("base:v1").unwrap(),
            registry: registry.clone(),
            store: dir.path().join("store"),
        });
        let prepared = prepare(s, &fetcher(dir.path()), None).await.unwrap();
        assert!(dir.path().join("sandbox/run/app.sh").is_file());
        assert_eq!(prepared.rootfs, Some(registry.join("base/v1")));
    }

    #[tokio::test]
    async fn each_failure_names_what_failed_with_mesos_wording() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let e = prepare(spec(dir.path().join("file/sandbox")), &fetcher(dir.path()), None).await.unwrap_err();
        assert!(matches!(e, LaunchError::Sandbox { .. }));
        assert!(e.to_string().starts_with(&format!("cannot create sandbox {}/file/sandbox", dir.path().display())));

        let mut s = spec(dir.path().join("sandbox"));
        s.command.uris.push(Uri {
            value: "/nonexistent/app.tgz".into(),
            executable: false,
            extract: true,
            cache: false,
            output_file: String::new(),
        });
        let e = prepare(s, &fetcher(dir.path()), None).await.unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Failed to fetch all URIs for container 'c1': failed to fetch '/nonexistent/app.tgz'"),
            "{e}"
        );
        assert_eq!(e.reason(), Reason::ContainerLaunchFailed);

        let mut s = spec(dir.path().join("sandbox2"));
        s.image = Some(ImageRequest {
            image: "missing".into(),
            reference: ImageRef::parse("missing").unwrap(),
            registry: dir.path().join("registry"),
            store: dir.path().join("store"),
        });
        let e = prepare(s, &fetcher(dir.path()), None).await.unwrap_err();
        assert!(e.to_string().starts_with("image 'missing' is not in the registry"), "{e}");
    }
}
