//! Opens the configured object store: a local folder or an S3(-compatible) bucket.

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::config::StoreLocation;

/// The object store media live in.
pub type MediaStore = Arc<dyn ObjectStore>;

/// Builds the store for `location`; a local folder is created if missing.
pub fn open(location: &StoreLocation) -> anyhow::Result<MediaStore> {
    match location {
        StoreLocation::Local(path) => {
            std::fs::create_dir_all(path)?;
            Ok(Arc::new(LocalFileSystem::new_with_prefix(path)?))
        }
        StoreLocation::S3 { bucket, s3 } => {
            // AWS_* variables first, then explicit settings on top.
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_allow_http(s3.allow_http);
            if let Some(v) = &s3.endpoint {
                b = b.with_endpoint(v);
            }
            if let Some(v) = &s3.region {
                b = b.with_region(v);
            }
            if let Some(v) = &s3.access_key_id {
                b = b.with_access_key_id(v);
            }
            if let Some(v) = &s3.secret_access_key {
                b = b.with_secret_access_key(v);
            }
            Ok(Arc::new(b.build()?))
        }
    }
}

/// Whether the store answers: a `head` of a key that need not exist (not-found is fine).
pub async fn ping(store: &MediaStore) -> Result<(), object_store::Error> {
    let probe = object_store::path::Path::from("readyz-probe");
    match store.head(&probe).await {
        Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
