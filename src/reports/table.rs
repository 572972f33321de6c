//! Column tables written as Parquet (arrow) and CSV side by side, streamed and atomic.
//!
//! Rows are appended in chunks as they are produced (e.g. per-image scores as images are
//! evaluated); both files are written under temporary names and renamed into place only when
//! the table is finished, so a reader never sees a half-written report.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, ArrayRef, Float64Array, RecordBatchReader, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::util::temp_path;

#[derive(Clone, Debug, PartialEq)]
pub enum Column {
    Str(Vec<Option<String>>),
    U64(Vec<Option<u64>>),
    F64(Vec<Option<f64>>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Str(v) => v.len(),
            Column::U64(v) => v.len(),
            Column::F64(v) => v.len(),
        }
    }

    fn data_type(&self) -> DataType {
        match self {
            Column::Str(_) => DataType::Utf8,
            Column::U64(_) => DataType::UInt64,
            Column::F64(_) => DataType::Float64,
        }
    }

    fn cell(&self, i: usize) -> String {
        match self {
            Column::Str(v) => v[i].clone().unwrap_or_default(),
            Column::U64(v) => v[i].map(|x| x.to_string()).unwrap_or_default(),
            // Shortest round-trip representation: CSV keeps full precision.
            Column::F64(v) => v[i].map(|x| x.to_string()).unwrap_or_default(),
        }
    }

    fn to_arrow(&self) -> ArrayRef {
        match self {
            Column::Str(v) => Arc::new(StringArray::from(v.clone())),
            Column::U64(v) => Arc::new(UInt64Array::from(v.clone())),
            Column::F64(v) => Arc::new(Float64Array::from(v.clone())),
        }
    }
}

/// Named columns of equal length.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<(String, Column)>,
}

impl Table {
    pub fn push(&mut self, name: &str, col: Column) -> &mut Self {
        self.columns.push((name.to_string(), col));
        self
    }

    /// Append the rows of a table with the same columns (an empty `self` takes `other` whole).
    pub(crate) fn append_rows(&mut self, other: Table) {
        if self.columns.is_empty() {
            *self = other;
            return;
        }
        for ((_, a), (_, b)) in self.columns.iter_mut().zip(other.columns) {
            match (a, b) {
                (Column::Str(a), Column::Str(b)) => a.extend(b),
                (Column::U64(a), Column::U64(b)) => a.extend(b),
                (Column::F64(a), Column::F64(b)) => a.extend(b),
                (a, b) => panic!("column type mismatch: {a:?} vs {b:?}"),
            }
        }
    }

    pub fn rows(&self) -> usize {
        self.columns.first().map(|(_, c)| c.len()).unwrap_or(0)
    }

    pub fn get(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// Column `name` as text, one per row (numbers as in CSV; missing cells and a missing
    /// column as "").
    pub(crate) fn texts(&self, name: &str) -> Vec<String> {
        match self.get(name) {
            Some(c) => (0..c.len()).map(|i| c.cell(i)).collect(),
            None => vec![String::new(); self.rows()],
        }
    }

    /// Column `name` as numbers, one per row (missing cells, text and a missing column as NaN).
    pub(crate) fn floats(&self, name: &str) -> Vec<f64> {
        match self.get(name) {
            Some(Column::F64(v)) => v.iter().map(|x| x.unwrap_or(f64::NAN)).collect(),
            Some(Column::U64(v)) => v.iter().map(|x| x.map_or(f64::NAN, |x| x as f64)).collect(),
            _ => vec![f64::NAN; self.rows()],
        }
    }

    fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(self.columns.iter().map(|(n, c)| Field::new(n, c.data_type(), true)).collect::<Vec<_>>()))
    }

    fn record_batch(&self, schema: SchemaRef) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(schema, self.columns.iter().map(|(_, c)| c.to_arrow()).collect())?)
    }

    /// Read a Parquet table: text columns as [`Column::Str`], floating-point as
    /// [`Column::F64`], integers as [`Column::U64`]. A file that is not Parquet, or has a column
    /// of another type (or negative integers), is an error naming the file.
    /// Read a table this tool wrote, checked first against its hash sidecar
    /// (`<name>.parquet.sha256`, written with it): a mismatch or an unreadable table is a data
    /// error naming the file (exit 3), never a silently changed summary. A table of a run
    /// written before sidecars existed is read with a warning.
    pub fn read_checked(path: &Path) -> crate::error::Result<Table> {
        if crate::integrity::is_sealed(path) {
            crate::integrity::verify_file(path).map_err(crate::error::Failure::data)?;
        } else if path.is_file() {
            tracing::warn!(file = %path.display(), "no content hash beside this table (an older run): read unverified");
        }
        Table::read_parquet(path).map_err(|e| crate::error::Failure::data(format!("{e:#}")))
    }

    pub fn read_parquet(path: &Path) -> Result<Table> {
        let what = || format!("{}: not a readable Parquet table", path.display());
        let f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(f).with_context(what)?.build().with_context(what)?;
        let mut t = Table::default();
        for field in reader.schema().fields() {
            let col = match field.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Column::Str(Vec::new()),
                DataType::Float64 | DataType::Float32 | DataType::Float16 => Column::F64(Vec::new()),
                d if d.is_integer() => Column::U64(Vec::new()),
                d => bail!("{}: column `{}` has type {d}, not text, number or integer", path.display(), field.name()),
            };
            t.push(field.name(), col);
        }
        for batch in reader {
            let batch = batch.with_context(what)?;
            for ((name, col), array) in t.columns.iter_mut().zip(batch.columns()) {
                let cast = |to: &DataType| {
                    arrow::compute::cast(array, to)
                        .with_context(|| format!("{}: column `{name}` cannot be read as {to}", path.display()))
                };
                match col {
                    Column::Str(v) => {
                        let a = cast(&DataType::Utf8)?;
                        let a = a.as_any().downcast_ref::<StringArray>().context("text column")?;
                        v.extend(a.iter().map(|x| x.map(str::to_string)));
                    }
                    Column::F64(v) => {
                        let a = cast(&DataType::Float64)?;
                        v.extend(a.as_any().downcast_ref::<Float64Array>().context("float column")?.iter());
                    }
                    Column::U64(v) => {
                        let a = cast(&DataType::UInt64)?;
                        if a.null_count() > array.null_count() {
                            bail!("{}: column `{name}` has negative or out-of-range integers", path.display());
                        }
                        v.extend(a.as_any().downcast_ref::<UInt64Array>().context("integer column")?.iter());
                    }
                }
            }
        }
        Ok(t)
    }

    /// Write as `<stem>.parquet` and `<stem>.csv` in one go.
    pub fn write(&self, stem: &Path) -> Result<()> {
        let mut w = TableWriter::create(stem, self)?;
        w.append(self)?;
        w.finish()
    }
}

/// Streaming writer of a table to Parquet + CSV; the first chunk fixes the schema.
pub struct TableWriter {
    schema: SchemaRef,
    parquet: Option<ArrowWriter<File>>,
    csv: csv::Writer<File>,
    tmp: [PathBuf; 2],
    dest: [PathBuf; 2],
}

impl TableWriter {
    pub(crate) fn create(stem: &Path, like: &Table) -> Result<TableWriter> {
        let dest = [stem.with_extension("parquet"), stem.with_extension("csv")];
        let tmp = [temp_path(&dest[0]), temp_path(&dest[1])];
        let schema = like.schema();
        let f = File::create(&tmp[0]).with_context(|| format!("{}: cannot create", tmp[0].display()))?;
        let parquet = ArrowWriter::try_new(f, schema.clone(), None)?;
        let mut csv =
            csv::Writer::from_path(&tmp[1]).with_context(|| format!("{}: cannot create", tmp[1].display()))?;
        csv.write_record(like.columns.iter().map(|(n, _)| n.as_str()))?;
        Ok(TableWriter { schema, parquet: Some(parquet), csv, tmp, dest })
    }

    pub(crate) fn append(&mut self, chunk: &Table) -> Result<()> {
        if chunk.rows() == 0 {
            return Ok(());
        }
        self.parquet.as_mut().expect("open writer").write(&chunk.record_batch(self.schema.clone())?)?;
        for i in 0..chunk.rows() {
            self.csv.write_record(chunk.columns.iter().map(|(_, c)| c.cell(i)))?;
        }
        // Row groups are flushed as they fill; memory stays bounded for long runs.
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<()> {
        self.csv.flush()?;
        self.parquet.take().expect("open writer").close()?;
        for (t, d) in self.tmp.iter().zip(&self.dest) {
            std::fs::rename(t, d).with_context(|| format!("{}: cannot move into place", d.display()))?;
        }
        // The Parquet file is what is read back: its hash beside it (see `read_checked`).
        crate::integrity::seal_file(&self.dest[0])
            .with_context(|| format!("{}: cannot write its hash", self.dest[0].display()))
    }
}

impl Drop for TableWriter {
    fn drop(&mut self) {
        // Unfinished (error or interruption): leave no temporary files behind.
        for t in &self.tmp {
            let _ = std::fs::remove_file(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table survives the Parquet round trip (nulls included); a file that is not Parquet is
    /// an error naming it, and so is a column of a type a table cannot hold.
    #[test]
    fn parquet_reading_round_trips_and_rejects_what_it_cannot_read() {
        let dir = std::env::temp_dir().join(format!("rp-table-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut t = Table::default();
        t.push("name", Column::Str(vec![Some("a".into()), None, Some("c".into())]))
            .push("n", Column::U64(vec![Some(1), Some(u64::MAX), None]))
            .push("x", Column::F64(vec![Some(0.1), None, Some(-2.5e300)]));
        t.write(&dir.join("t")).unwrap();
        assert_eq!(Table::read_parquet(&dir.join("t.parquet")).unwrap(), t);

        std::fs::write(dir.join("bad.parquet"), b"not parquet at all").unwrap();
        let e = Table::read_parquet(&dir.join("bad.parquet")).unwrap_err();
        assert!(format!("{e:#}").contains("bad.parquet: not a readable Parquet table"), "{e:#}");
        assert!(Table::read_parquet(&dir.join("missing.parquet")).is_err());

        // A list column (not text, number or integer) is refused by name.
        let list =
            arrow::array::ListArray::from_iter_primitive::<arrow::datatypes::Int32Type, _, _>(vec![Some(vec![Some(
                1,
            )])]);
        let schema = Arc::new(Schema::new(vec![Field::new("l", list.data_type().clone(), true)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(list) as ArrayRef]).unwrap();
        let mut w = ArrowWriter::try_new(File::create(dir.join("list.parquet")).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let e = Table::read_parquet(&dir.join("list.parquet")).unwrap_err();
        assert!(format!("{e:#}").contains("column `l`"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
