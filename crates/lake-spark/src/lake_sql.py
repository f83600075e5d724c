"""lake's driver for `sql` steps on Spark (EMR, or a local PySpark in tests).

Usage: spark-submit lake_sql.py <job.json>

The job (written by lake) names the query, the exact committed objects of each input with
their format options, the staging folder to write, the partition columns and the
expectations. The driver does what lake's embedded engine does:

- registers each input as a view: CSV (header, delimiter, null values, text columns unless
  types are inferred), NDJSON, a JSON document of column arrays (one row per element, the
  document's scalars on every row) or Parquet; `key=value` folders below the dataset become
  columns; column names become snake_case for raw inputs;
- runs the query with CAST failures giving NULL; a CAST of the outermost SELECT list that
  fails on a non-null value rejects its row, as does an expectation that is not TRUE;
- writes passing rows as Parquet under <output>/ (partitioned), rejected rows under
  <output>/_rejected/ with `_reason` and `_run_id`, and the counts to <output>/_metrics.json.

lake publishes the staging folder when the step has completed.
"""

import json
import re
import sys

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

REASON = "__lake_reason"
VALUE_SEP = " on value '"


def snake_case(name, index):
    out = []
    prev_lower = False
    for c in name.strip():
        if c.isalnum():
            if c.isupper() and prev_lower and (not out or out[-1] != "_"):
                out.append("_")
            prev_lower = c.islower() or c.isdigit()
            out.append(c.lower())
        else:
            if out and out[-1] != "_":
                out.append("_")
            prev_lower = False
    s = "".join(out).rstrip("_")
    if not s:
        return "_c%d" % index
    if s[0].isdigit():
        return "_" + s
    return s


def read_text(spark, url):
    """The whole content of a (small) file through Hadoop's file system."""
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(url)
    fs = path.getFileSystem(spark._jsc.hadoopConfiguration())
    stream = fs.open(path)
    try:
        data = jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()
    return data


def write_text(spark, url, text):
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(url)
    fs = path.getFileSystem(spark._jsc.hadoopConfiguration())
    out = fs.create(path, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()


def kind_of(inp):
    kind = inp["format"].get("kind")
    if kind:
        return kind
    exts = {"csv": "csv", "tsv": "csv", "txt": "csv", "json": "json", "jsonl": "ndjson",
            "ndjson": "ndjson", "parquet": "parquet"}
    for p in inp["paths"]:
        ext = p.rsplit("/", 1)[-1].rsplit(".", 1)[-1].lower()
        if ext in exts:
            return exts[ext]
    return "csv"


def column_arrays(df, json_path):
    """Rows from a JSON document, as the embedded engine reads it: of column arrays (element i
    of every array is row i), or of records (an array of objects at json_path; a document that
    is an array of objects is read by Spark as its rows already)."""
    if json_path:
        parts = json_path.split(".")
    else:
        parts = None
        for f in df.schema.fields:
            t = f.dataType
            if t.typeName() == "struct" and t.fields and all(
                    c.dataType.typeName() == "array" for c in t.fields):
                parts = [f.name]
                break
        if parts is None:
            if "_corrupt_record" in df.columns:
                raise ValueError("no object of column arrays in the document; set json_path")
            return df
    struct_col = ".".join("`%s`" % p for p in parts)
    t = df.select(F.col(struct_col)).schema.fields[0].dataType
    scalars = [f.name for f in df.schema.fields
               if f.name != parts[0] and f.dataType.typeName() not in ("struct", "array")]
    if t.typeName() == "array":
        # An array of records: a row per record, a column per member, the document's
        # top-level scalars on every row unless a member has the name.
        members = [c.name for c in t.elementType.fields]
        rows = df.select(F.explode(F.col(struct_col)).alias("__row"),
                         *[F.col("`%s`" % s) for s in scalars])
        return rows.select(*[F.col("__row.`%s`" % m).alias(m) for m in members],
                           *[F.col("`%s`" % s) for s in scalars if s not in members])
    arrays = [c.name for c in t.fields]
    zipped = F.arrays_zip(*[F.col(struct_col + ".`%s`" % a) for a in arrays])
    rows = df.select(F.explode(zipped).alias("__row"), *[F.col("`%s`" % s) for s in scalars])
    return rows.select(*[F.col("__row.`%s`" % a).alias(a) for a in arrays],
                       *[F.col("`%s`" % s) for s in scalars])


def read_input(spark, inp):
    paths = inp["paths"]
    fmt = inp["format"]
    base = inp["prefix"]
    reader = spark.read.option("basePath", base)
    kind = kind_of(inp)
    if not paths:
        raise ValueError("input %s has no committed objects" % inp["dataset"])
    if kind == "csv":
        reader = (reader.option("header", fmt["header"])
                  .option("sep", chr(fmt["delimiter"]))
                  .option("inferSchema", fmt["infer_types"])
                  .option("mode", "PERMISSIVE"))
        df = reader.csv(paths)
        # Several null markers: Spark takes one, so map them after reading.
        nulls = fmt.get("null_values") or []
        cols = []
        for f in df.schema.fields:
            c = F.col("`%s`" % f.name)
            if f.dataType.typeName() == "string" and nulls:
                c = F.when(c.isin(*nulls), F.lit(None)).otherwise(c)
            cols.append(c.alias(f.name))
        df = df.select(*cols)
    elif kind == "ndjson":
        df = reader.json(paths)
    elif kind == "json":
        df = column_arrays(reader.option("multiLine", True).json(paths), fmt.get("json_path"))
    elif kind == "parquet":
        df = reader.parquet(*paths)
    else:
        raise ValueError("unknown format %r" % kind)
    if fmt.get("snake_case"):
        names = []
        for i, name in enumerate(df.columns):
            # Spark names a column with an empty header `_c<i>`, as lake does.
            names.append(name if re.fullmatch(r"_c\d+", name) else snake_case(name, i))
        df = df.toDF(*names)
    return df


def top_level(sql, start, words):
    """Index of the first of `words` at parenthesis depth 0 from `start` (outside quotes)."""
    depth = 0
    i = start
    quote = None
    while i < len(sql):
        c = sql[i]
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"`":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0:
            for w in words:
                if (sql[i:i + len(w)].upper() == w
                        and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] == "_"))
                        and not (i + len(w) < len(sql)
                                 and (sql[i + len(w)].isalnum() or sql[i + len(w)] == "_"))):
                    return i, w
        i += 1
    return -1, None


def outer_casts(sql):
    """The CASTs of the outermost SELECT list: (expression, type, where the FROM starts)."""
    sel, _ = top_level(sql, 0, ["SELECT"])
    if sel < 0:
        return [], -1
    frm, _ = top_level(sql, sel + 6, ["FROM"])
    end = frm if frm >= 0 else len(sql)
    casts = []
    for m in re.finditer(r"\bCAST\s*\(", sql[sel:end], re.IGNORECASE):
        open_at = sel + m.end() - 1
        depth = 0
        for j in range(open_at, end):
            if sql[j] == "(":
                depth += 1
            elif sql[j] == ")":
                depth -= 1
                if depth == 0:
                    inner = sql[open_at + 1:j]
                    k = inner.upper().rfind(" AS ")
                    if k > 0:
                        casts.append((inner[:k].strip(), inner[k + 4:].strip()))
                    break
    return casts, frm


def checked_query(spark, sql):
    """The query with a flag column per outer CAST (None where it did not fail)."""
    casts, frm = outer_casts(sql)
    if not casts or frm < 0:
        return spark.sql(sql), []
    flags = []
    exprs = []
    for i, (expr, typ) in enumerate(casts):
        label = "CAST(%s AS %s) failed%s" % (expr, typ.upper(), VALUE_SEP)
        name = "__lake_cast_%d" % i
        flags.append(name)
        exprs.append(
            "CASE WHEN (%s) IS NOT NULL AND CAST((%s) AS %s) IS NULL THEN concat(%s, CAST((%s) AS STRING), \"'\") END AS %s"
            % (expr, expr, typ, json.dumps(label), expr, name))
    rewritten = sql[:frm].rstrip() + ",\n  " + ",\n  ".join(exprs) + "\n" + sql[frm:]
    try:
        return spark.sql(rewritten), flags
    except Exception as e:  # the rewrite does not fit this query: run it without flags
        print("lake: CAST checks skipped (%s)" % str(e).splitlines()[0], file=sys.stderr)
        return spark.sql(sql), []


def main():
    job_url = sys.argv[1]
    spark = (SparkSession.builder.appName("lake-sql")
             .config("spark.sql.ansi.enabled", "false")
             # Timestamps without a time zone, as lake's embedded engine has them.
             .config("spark.sql.timestampType", "TIMESTAMP_NTZ")
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.sql.sources.partitionOverwriteMode", "static")
             .getOrCreate())
    job = json.loads(read_text(spark, job_url))
    for inp in job["inputs"]:
        read_input(spark, inp).createOrReplaceTempView("`%s`" % inp["table"])

    df, flags = checked_query(spark, job["sql"])
    outputs = [c for c in df.columns if c not in flags]
    if len(set(outputs)) != len(outputs):
        dup = [c for c in outputs if outputs.count(c) > 1][0]
        raise ValueError("the query gives two columns named %r; name them apart with AS" % dup)
    for col in job["partition_by"]:
        if col not in outputs:
            raise ValueError("partition_by column %r is not in the query's output (columns: %s)"
                             % (col, ", ".join(outputs)))
    cases = ["WHEN `%s` IS NOT NULL THEN `%s`" % (f, f) for f in flags]
    view = "__lake_checked"
    df.createOrReplaceTempView(view)
    for cond in job["expect"]:
        cases.append("WHEN NOT coalesce((%s), false) THEN %s" % (cond, json.dumps("expect: " + cond)))
    out = job["output"].rstrip("/")
    if cases:
        checked = spark.sql("SELECT *, CASE %s END AS %s FROM %s" % (" ".join(cases), REASON, view))
        checked = checked.persist()
        good = checked.where(F.col(REASON).isNull()).select(*["`%s`" % c for c in outputs])
        bad = (checked.where(F.col(REASON).isNotNull())
               .select(*["`%s`" % c for c in outputs],
                       F.col(REASON).alias("_reason"), F.lit(job["run_id"]).alias("_run_id")))
        reasons = {}
        rejected = 0
        for row in (checked.where(F.col(REASON).isNotNull())
                    .select(F.split(F.col(REASON), VALUE_SEP).getItem(0).alias("check"))
                    .groupBy("check").count().collect()):
            reasons[row["check"]] = row["count"]
            rejected += row["count"]
    else:
        good = df.persist()
        bad = None
        reasons = {}
        rejected = 0
    # The output first: "overwrite" clears the folder, _rejected/ included.
    writer = good.write.mode("overwrite")
    if job["partition_by"]:
        writer = writer.partitionBy(*job["partition_by"])
    writer.parquet(out)
    if rejected:
        bad.write.mode("overwrite").parquet(out + "/_rejected")
    rows = good.count()
    write_text(spark, out + "/_metrics.json",
               json.dumps({"rows": rows, "rejected": rejected, "reasons": reasons}))
    spark.stop()


if __name__ == "__main__":
    main()
