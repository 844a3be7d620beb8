//! Whole-file reads with transparent gzip decoding.
//!
//! Data files are small enough (≤ 31 MB each) to read in one `fs::read` and parse from memory,
//! which is both the fastest way to load them and the simplest to validate: every reader sees
//! the complete byte string and can compare its length with what the header promises.
//! Compression is detected by content (the gzip magic `1f 8b`), not by file name, so a `.gz`
//! suffix is neither required nor trusted. Inflation goes straight into a buffer sized from the
//! gzip trailer, so a 30 MB batch decodes without reallocation; the several files of a data
//! set are decoded on parallel threads.
//!
//! Inflation is bounded by what the format itself declares, so a small hostile file (a
//! "gzip bomb") cannot exhaust memory: an IDX file may inflate to at most its header plus the
//! product of the dimensions that header declares, and anything else (CIFAR's headerless
//! records) to at most [`MAX_RECORD_FILE`] bytes, a little above the largest official file.
//! Content past the bound is an [`DataError::InflatesTooFar`] error, detected after reading
//! one byte more than the bound and never after buffering the rest.

use std::borrow::Cow;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::{panic, thread};

use flate2::bufread::MultiGzDecoder;

use crate::error::{DataError, Result};

/// The two bytes every gzip member starts with (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Largest capacity we pre-allocate from an (untrusted) gzip size trailer.
const MAX_SIZE_HINT: usize = 256 << 20;

/// Largest inflated size of a headerless record file (CIFAR): 60,000 records of the longest
/// record (CIFAR-100, 3,074 bytes). The largest official file (CIFAR-100 `train.bin`, 50,000
/// records) is 153,700,000 bytes.
pub(crate) const MAX_RECORD_FILE: u64 = 60_000 * 3_074;

/// Largest inflated size of any IDX file, whatever its header claims: MNIST's largest file
/// (training images, 47,040,016 bytes) fits more than ten times over.
pub(crate) const MAX_IDX_FILE: u64 = 512 << 20;

/// Bytes of inflated prefix examined to find the format's declared size: an IDX header with
/// up to three dimensions.
const PREFIX: usize = 16;

/// Whether `bytes` starts with the gzip magic.
pub(crate) fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Reads `path` completely, inflating it if it is gzip. Empty content is an error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    let raw = fs::read(path).map_err(|e| DataError::io(path, e))?;
    let bytes = if is_gzip(&raw) {
        gunzip(&raw, path)?
    } else {
        raw
    };
    if bytes.is_empty() {
        return Err(DataError::Empty {
            file: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// Reads several files with [`read_file`], concurrently (one thread per file, since
/// inflating is CPU-bound), and returns their contents in order or the first error.
pub(crate) fn read_files(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    thread::scope(|scope| {
        let readers: Vec<_> = paths
            .iter()
            .map(|path| scope.spawn(move || read_file(path)))
            .collect();
        readers
            .into_iter()
            .map(|reader| {
                reader
                    .join()
                    .unwrap_or_else(|panic| panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Inflates `bytes` if they are gzip, otherwise borrows them. `file` names them in errors.
pub(crate) fn decode<'a>(bytes: &'a [u8], file: &Path) -> Result<Cow<'a, [u8]>> {
    if is_gzip(bytes) {
        gunzip(bytes, file).map(Cow::Owned)
    } else {
        Ok(Cow::Borrowed(bytes))
    }
}

/// Inflates a (possibly multi-member) gzip stream held in memory, never past the size its
/// content's format declares (see the module docs).
pub(crate) fn gunzip(bytes: &[u8], file: &Path) -> Result<Vec<u8>> {
    let gzip_error = |source| DataError::Gzip {
        file: file.to_path_buf(),
        source,
    };
    let mut decoder = MultiGzDecoder::new(bytes);
    let mut out = Vec::new();
    (&mut decoder)
        .take(PREFIX as u64)
        .read_to_end(&mut out)
        .map_err(gzip_error)?;
    let limit = declared_limit(&out);
    let capacity = (size_hint(bytes) as u64).min(limit) as usize;
    out.try_reserve_exact(capacity.saturating_sub(out.len()))
        .map_err(|_| DataError::InflatesTooFar {
            file: file.to_path_buf(),
            limit,
        })?;
    (&mut decoder)
        .take((limit + 1).saturating_sub(out.len() as u64))
        .read_to_end(&mut out)
        .map_err(gzip_error)?;
    if out.len() as u64 > limit {
        return Err(DataError::InflatesTooFar {
            file: file.to_path_buf(),
            limit,
        });
    }
    Ok(out)
}

/// The most bytes a file starting with `prefix` (its first [`PREFIX`] inflated bytes) may
/// inflate to: header plus declared body for an IDX file of unsigned bytes (magic
/// `00 00 08 n`, `n` = 1..=3 dimensions), capped at [`MAX_IDX_FILE`]; [`MAX_RECORD_FILE`]
/// for anything else.
fn declared_limit(prefix: &[u8]) -> u64 {
    match prefix {
        [0, 0, 0x08, dims @ 1..=3, rest @ ..] => {
            let dims = usize::from(*dims);
            let header = 4 + 4 * dims as u64;
            let declared = rest
                .chunks_exact(4)
                .take(dims)
                .map(|word| u64::from(u32::from_be_bytes([word[0], word[1], word[2], word[3]])))
                .try_fold(1u64, u64::checked_mul);
            match declared {
                // A header cut short inflates to at most its prefix; the reader reports it.
                _ if rest.len() < 4 * dims => prefix.len() as u64,
                Some(body) => header.saturating_add(body).min(MAX_IDX_FILE),
                None => MAX_IDX_FILE,
            }
        }
        _ => MAX_RECORD_FILE,
    }
}

/// The uncompressed size recorded in the last member's trailer (ISIZE, little-endian,
/// modulo 2^32), capped so that a corrupt trailer cannot trigger a huge allocation.
fn size_hint(bytes: &[u8]) -> usize {
    bytes
        .len()
        .checked_sub(4)
        .and_then(|start| bytes.get(start..))
        .and_then(|tail| <[u8; 4]>::try_from(tail).ok())
        .map_or(0, |isize| u32::from_le_bytes(isize) as usize)
        .min(MAX_SIZE_HINT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::gzip;

    #[test]
    fn raw_and_gzip_files_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(dir.path().join("raw"), &data).unwrap();
        fs::write(dir.path().join("packed"), gzip(&data)).unwrap();
        assert_eq!(read_file(&dir.path().join("raw")).unwrap(), data);
        assert_eq!(read_file(&dir.path().join("packed")).unwrap(), data);
    }

    #[test]
    fn read_files_keeps_order_and_reports_errors() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..4u8)
            .map(|i| {
                let path = dir.path().join(format!("f{i}"));
                fs::write(&path, gzip(&[i; 100])).unwrap();
                path
            })
            .collect();
        let contents = read_files(&paths).unwrap();
        for (i, bytes) in contents.iter().enumerate() {
            assert_eq!(bytes, &[i as u8; 100]);
        }
        let mut broken = paths.clone();
        broken.insert(2, dir.path().join("missing"));
        let err = read_files(&broken).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn concatenated_gzip_members_are_joined() {
        let mut packed = gzip(b"hello ");
        packed.extend(gzip(b"world"));
        assert_eq!(gunzip(&packed, Path::new("x")).unwrap(), b"hello world");
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let err = read_file(Path::new("/no/such/file.gz")).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }));
        assert!(err.to_string().starts_with("/no/such/file.gz: "), "{err}");
    }

    #[test]
    fn empty_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        fs::write(&path, b"").unwrap();
        assert!(matches!(read_file(&path), Err(DataError::Empty { .. })));
        // A valid gzip stream of nothing is just as empty.
        fs::write(&path, gzip(b"")).unwrap();
        assert!(matches!(read_file(&path), Err(DataError::Empty { .. })));
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let packed = gzip(&[42u8; 5000]);
        for cut in [2, 10, packed.len() / 2, packed.len() - 1] {
            let err = gunzip(&packed[..cut], Path::new("t.gz")).unwrap_err();
            assert!(matches!(err, DataError::Gzip { .. }), "cut {cut}: {err}");
            assert!(err
                .to_string()
                .starts_with("t.gz: corrupt or truncated gzip"));
        }
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 13) as u8).collect();
        let mut packed = gzip(&data);
        // Damage the deflate body and, separately, the CRC in the trailer.
        let mid = packed.len() / 2;
        packed[mid] ^= 0xff;
        assert!(matches!(
            gunzip(&packed, Path::new("c.gz")),
            Err(DataError::Gzip { .. })
        ));
        let mut packed = gzip(&data);
        let crc = packed.len() - 8;
        packed[crc] ^= 0x01;
        assert!(matches!(
            gunzip(&packed, Path::new("c.gz")),
            Err(DataError::Gzip { .. })
        ));
    }

    #[test]
    fn size_hint_is_capped_and_safe() {
        assert_eq!(size_hint(&[]), 0);
        assert_eq!(size_hint(&[1, 2, 3]), 0);
        assert_eq!(size_hint(&gzip(&[0u8; 1234])), 1234);
        assert_eq!(size_hint(&[0xff; 8]), MAX_SIZE_HINT);
    }

    #[test]
    fn declared_limit_follows_the_idx_header() {
        // 3 images of 28×28: 16-byte header + 2,352 pixels.
        assert_eq!(
            declared_limit(&crate::testutil::idx_images(3)[..16]),
            16 + 3 * 784
        );
        // 5 labels: 8-byte header + 5 bytes.
        assert_eq!(
            declared_limit(&crate::testutil::idx_labels(&[1; 5])[..13]),
            13
        );
        // Dimensions whose product overflows, or is absurd, are capped.
        let huge = [
            0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 9,
        ];
        assert_eq!(declared_limit(&huge), MAX_IDX_FILE);
        // Not IDX: the record-file bound.
        assert_eq!(declared_limit(b"\x06cifar record"), MAX_RECORD_FILE);
        // An IDX header cut short may not inflate past what is there.
        assert_eq!(declared_limit(&[0, 0, 8, 3, 0, 0]), 6);
    }

    #[test]
    fn gzip_bomb_stops_at_the_declared_size() {
        // An IDX image header declaring 2 images, followed by far more pixels than that:
        // the content past 16 + 2 × 784 bytes is refused, not buffered.
        let mut data = crate::testutil::idx_images(2);
        data.extend(std::iter::repeat_n(0u8, 4 << 20));
        let packed = gzip(&data);
        assert!(
            packed.len() < 64 << 10,
            "the bomb is small: {}",
            packed.len()
        );
        let err = gunzip(&packed, Path::new("bomb.gz")).unwrap_err();
        assert!(
            matches!(err, DataError::InflatesTooFar { limit, .. } if limit == 16 + 2 * 784),
            "{err}"
        );
        assert!(err.to_string().starts_with("bomb.gz: "), "{err}");
        // Exactly the declared size still reads (and is then checked by the IDX reader).
        let exact = crate::testutil::idx_images(2);
        assert_eq!(gunzip(&gzip(&exact), Path::new("ok.gz")).unwrap(), exact);
    }

    #[test]
    fn record_file_bomb_stops_at_the_record_bound() {
        // 200 MB of zeros (no header: a CIFAR-like record file) packs to ~200 KB and is refused
        // after MAX_RECORD_FILE + 1 bytes.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let block = vec![0u8; 1 << 20];
        for _ in 0..200 {
            std::io::Write::write_all(&mut enc, &block).unwrap();
        }
        let packed = enc.finish().unwrap();
        let err = gunzip(&packed, Path::new("records.gz")).unwrap_err();
        assert!(
            matches!(err, DataError::InflatesTooFar { limit, .. } if limit == MAX_RECORD_FILE),
            "{err}"
        );
    }

    #[test]
    fn decode_borrows_raw_bytes() {
        let raw = b"not gzip";
        assert!(matches!(
            decode(raw, Path::new("r")).unwrap(),
            Cow::Borrowed(_)
        ));
        let packed = gzip(raw);
        assert_eq!(&*decode(&packed, Path::new("r")).unwrap(), raw);
    }
}
