//! An object store for tests, with a hook before every PUT.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use slatedb::object_store::path::Path;
use slatedb::object_store::ObjectStore;

/// What runs before each PUT (with the object's path); the PUT goes on when it is done.
pub(crate) type PutHook = Arc<dyn Fn(&Path) -> BoxFuture<'static, ()> + Send + Sync>;

/// An object store that runs a hook before every PUT: a slow store, or one that makes
/// some writes wait for others.
pub(crate) struct Hooked {
    inner: Arc<dyn ObjectStore>,
    hook: PutHook,
}

impl Hooked {
    pub(crate) fn new(
        inner: Arc<dyn ObjectStore>,
        hook: impl Fn(&Path) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) -> Hooked {
        Hooked {
            inner,
            hook: Arc::new(hook),
        }
    }
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hooked({:?})", self.inner)
    }
}

impl std::fmt::Display for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hooked({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Hooked {
    async fn put_opts(
        &self,
        location: &Path,
        payload: slatedb::object_store::PutPayload,
        opts: slatedb::object_store::PutOptions,
    ) -> slatedb::object_store::Result<slatedb::object_store::PutResult> {
        (self.hook)(location).await;
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: slatedb::object_store::PutMultipartOptions,
    ) -> slatedb::object_store::Result<Box<dyn slatedb::object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: slatedb::object_store::GetOptions,
    ) -> slatedb::object_store::Result<slatedb::object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: futures_util::stream::BoxStream<'static, slatedb::object_store::Result<Path>>,
    ) -> futures_util::stream::BoxStream<'static, slatedb::object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures_util::stream::BoxStream<
        'static,
        slatedb::object_store::Result<slatedb::object_store::ObjectMeta>,
    > {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> slatedb::object_store::Result<slatedb::object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: slatedb::object_store::CopyOptions,
    ) -> slatedb::object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
