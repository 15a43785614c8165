//! Reading an image reference: its repository and its tag.

/// The repository of an image reference: without its digest and tag.
pub fn repository(image: &str) -> &str {
    let without_digest = image.split_once('@').map_or(image, |(name, _)| name);
    match without_digest.rsplit_once(':') {
        // A colon after the last slash is a tag; before it, a port.
        Some((repository, tag)) if !tag.contains('/') => repository,
        _ => without_digest,
    }
}

/// Whether `image` is tagged `v<version>` (a digest may follow).
pub fn node_image_is_of(image: &str, version: &str) -> bool {
    let without_digest = image.split_once('@').map_or(image, |(name, _)| name);
    without_digest
        .rsplit_once(':')
        .is_some_and(|(_, tag)| tag.strip_prefix('v') == Some(version))
}
