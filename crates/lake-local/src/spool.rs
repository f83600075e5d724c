//! Record batches into Parquet files of at most `max_file_rows` rows each, in a scratch folder:
//! what a source that reads rows (a database extract) lands, one object per file.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use lake_core::scratch::ScratchDir;

/// One file of a spool: its object name, where it is, and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledFile {
    /// `<stem>-00001.parquet`.
    pub name: String,
    /// Its local path (inside the spool's scratch folder).
    pub path: PathBuf,
    /// Bytes.
    pub size: u64,
}

/// Parquet files (zstd) of a schema's rows, a new file every `max_file_rows` rows; removed
/// with the spool (or, after a kill, by the next run: see [`ScratchDir`]).
pub struct ParquetSpool {
    dir: ScratchDir,
    stem: String,
    schema: SchemaRef,
    max_file_rows: u64,
    writer: Option<(ArrowWriter<std::fs::File>, u64)>,
    files: Vec<SpooledFile>,
}

impl std::fmt::Debug for ParquetSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSpool")
            .field("dir", &self.dir.path())
            .field("files", &self.files.len())
            .finish_non_exhaustive()
    }
}

fn io(e: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
    std::io::Error::other(e)
}

impl ParquetSpool {
    /// A spool of `schema`'s rows into files named `<stem>-00001.parquet`…, in a new scratch
    /// folder named after `what` (`postgres`).
    pub fn new(
        what: &str,
        stem: &str,
        schema: SchemaRef,
        max_file_rows: u64,
    ) -> std::io::Result<Self> {
        Ok(Self {
            dir: ScratchDir::new(what)?,
            stem: stem.to_owned(),
            schema,
            max_file_rows: max_file_rows.max(1),
            writer: None,
            files: Vec::new(),
        })
    }

    /// The rows' schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Add `batch`'s rows (of the spool's schema), starting new files as they fill.
    pub fn write(&mut self, batch: &RecordBatch) -> std::io::Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            if self.writer.is_none() {
                self.writer = Some(self.open()?);
            }
            let (w, n) = self.writer.as_mut().expect("a file is open");
            let room = usize::try_from(self.max_file_rows - *n).unwrap_or(usize::MAX);
            let take = room.min(batch.num_rows() - offset);
            w.write(&batch.slice(offset, take)).map_err(io)?;
            *n += take as u64;
            offset += take;
            if *n >= self.max_file_rows {
                self.close()?;
            }
        }
        Ok(())
    }

    fn open(&mut self) -> std::io::Result<(ArrowWriter<std::fs::File>, u64)> {
        let name = format!("{}-{:05}.parquet", self.stem, self.files.len() + 1);
        let path = self.dir.path().join(&name);
        let file = std::fs::File::create(&path)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let w = ArrowWriter::try_new(file, Arc::clone(&self.schema), Some(props)).map_err(io)?;
        self.files.push(SpooledFile {
            name,
            path,
            size: 0,
        });
        Ok((w, 0))
    }

    fn close(&mut self) -> std::io::Result<()> {
        if let Some((w, _)) = self.writer.take() {
            w.close().map_err(io)?;
            let last = self.files.last_mut().expect("the file being written");
            last.size = std::fs::metadata(&last.path)?.len();
        }
        Ok(())
    }

    /// Close the last file: the files, in order. Without any row, one file without rows (the
    /// schema, so readers see the columns).
    pub fn finish(&mut self) -> std::io::Result<Vec<SpooledFile>> {
        if self.files.is_empty() {
            self.writer = Some(self.open()?);
        }
        self.close()?;
        Ok(self.files.clone())
    }

    /// The local file of the spooled object `name`.
    pub fn path_of(&self, name: &str) -> Option<PathBuf> {
        self.files
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.path.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn rows(path: &std::path::Path) -> Vec<i64> {
        let r = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        r.flat_map(|b| {
            let b = b.unwrap();
            let a = b
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone();
            (0..a.len()).map(move |i| a.value(i))
        })
        .collect()
    }

    #[test]
    fn batches_are_cut_into_files_of_max_rows_in_order() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let mut s = ParquetSpool::new("test", "t", Arc::clone(&schema), 4).unwrap();
        for chunk in [0..3i64, 3..10, 10..11] {
            let b = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int64Array::from_iter_values(chunk))],
            )
            .unwrap();
            s.write(&b).unwrap();
        }
        let files = s.finish().unwrap();
        let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["t-00001.parquet", "t-00002.parquet", "t-00003.parquet"]
        );
        assert_eq!(rows(&files[0].path), [0, 1, 2, 3]);
        assert_eq!(rows(&files[1].path), [4, 5, 6, 7]);
        assert_eq!(rows(&files[2].path), [8, 9, 10]);
        assert!(files.iter().all(|f| f.size > 0));
        let dir = files[0].path.parent().unwrap().to_owned();
        drop(s);
        assert!(!dir.exists(), "the scratch folder goes with the spool");

        let mut empty = ParquetSpool::new("test", "e", schema, 4).unwrap();
        let files = empty.finish().unwrap();
        assert_eq!(files.len(), 1);
        assert!(rows(&files[0].path).is_empty());
    }
}
