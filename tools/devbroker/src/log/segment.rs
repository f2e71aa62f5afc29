//! Segment files: one per partition, each batch written as its length and its bytes.

use std::{
    fs::{File, OpenOptions},
    io::{BufReader, Read},
    path::{Path, PathBuf},
};

use bytes::Bytes;
use tansu_sans_io::record::deflated;
use tansu_storage::Topition;
use tracing::warn;

use super::Partition;

pub(super) fn segment_path(dir: &Path, topition: &Topition) -> PathBuf {
    dir.join(format!(
        "{}-{}.segment",
        topition.topic(),
        topition.partition()
    ))
}

pub(super) fn segment_topition(path: &Path) -> Option<Topition> {
    let name = path.file_name()?.to_str()?.strip_suffix(".segment")?;
    let (topic, partition) = name.rsplit_once('-')?;
    Some(Topition::new(topic, partition.parse().ok()?))
}

pub(super) fn restore_segment(path: &Path) -> std::io::Result<Partition> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut partition = Partition::default();
    let mut length = [0u8; 4];
    // The end of the last whole batch: a batch cut short by a crash is cut off there,
    // so that the next append does not follow it.
    let mut whole: u64 = 0;
    loop {
        match reader.read_exact(&mut length) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(error) => return Err(error),
        }
        let mut encoded = vec![0u8; u32::from_be_bytes(length) as usize];
        match reader.read_exact(&mut encoded) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(error) => return Err(error),
        }
        let batch = deflated::Batch::try_from(Bytes::from(encoded))
            .map_err(|error| std::io::Error::other(format!("{path:?}: {error:?}")))?;
        whole += 4 + u64::from(u32::from_be_bytes(length));
        partition.index(&batch);
        partition.batches.push(batch);
    }
    let file = OpenOptions::new().append(true).open(path)?;
    let size = file.metadata()?.len();
    if size > whole {
        warn!(
            ?path,
            cut = size - whole,
            "A batch cut short at the end of the segment was removed."
        );
        file.set_len(whole)?;
    }
    partition.log_start = partition.batches.first().map_or(0, |b| b.base_offset);
    partition.segment = Some(file);
    Ok(partition)
}
