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
  <output>/_rejected/ with `_reason` and `_run_id`, and the counts to <output>/_metrics.json;
- with `merge` in the job (`mode = "merge"` or `"history"`), merges the passing rows into the
  dataset's files that hold one of their keys, as the embedded engine does (see `merge`), and
  names the files it replaces in <output>/_replaces.json.

lake publishes the staging folder when the step has completed.
"""

import json
import re
import sys
from urllib.parse import unquote

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


def q(name):
    """A quoted column name for Spark SQL."""
    return "`%s`" % name.replace("`", "``")


def fail(message):
    print("lake: %s" % message, file=sys.stderr)
    raise ValueError(message)


def partition_values(url, prefix):
    """The `key=value` folders of the file at `url` below the dataset's `prefix`."""
    rel = url[len(prefix):] if url.startswith(prefix) else url
    out = {}
    for seg in rel.strip("/").split("/")[:-1]:
        if "=" in seg:
            k, v = seg.split("=", 1)
            out[k] = unquote(v)
    return out


def plain_path(url):
    """A file's URL as Spark's input_file_name() and lake's job both spell it, compared alike."""
    if url.startswith("file:"):
        url = url[len("file:"):]
    elif "://" in url:
        url = url.split("://", 1)[1]
    return unquote(url).lstrip("/")


def check_ties(spark, m):
    if m["on_tie_any"]:
        return
    group = ", ".join(q(c) for c in m["key"] + ([m["order_by"]] if m["order_by"] else []))
    rows = spark.sql("SELECT %s FROM __batch GROUP BY %s HAVING count(*) > 1 LIMIT 1"
                     % (group, group)).collect()
    if rows:
        shown = ", ".join("%s = %s" % (k, v) for k, v in rows[0].asDict().items())
        fail("two rows of the batch have the same key and order (%s): which one wins is not "
             "known. Make them distinct, or set on_tie = \"any\" to keep either" % shown)


PRUNABLE = ("IntegerType", "LongType", "ShortType", "ByteType", "StringType", "DateType")


def touched(spark, m, batch, partition_by):
    """The dataset's files that hold a key of the batch: by partition folder where the key holds
    the partition columns, then by reading the key columns alone. A file beside the partition
    folders of a partitioned dataset (the empty file a merge that left no rows writes) always
    goes."""
    files = list(m["current"])
    if not files:
        return []
    types = {f.name: f.dataType for f in batch.schema.fields}
    stored = [k for k in m["key"] if k not in partition_by]
    beside = []
    if partition_by:
        beside = [o for o in files if not partition_values(o["url"], m["prefix"])]
        files = [o for o in files if partition_values(o["url"], m["prefix"])]
    if partition_by and all(p in m["key"] and type(types[p]).__name__ in PRUNABLE
                            for p in partition_by):
        parts = set()
        for row in batch.select(*[F.col(q(p)).cast("string") for p in partition_by]).distinct().collect():
            parts.add(tuple("__HIVE_DEFAULT_PARTITION__" if v is None else v for v in row))
        def in_batch(o):
            vals = partition_values(o["url"], m["prefix"])
            return tuple(vals.get(p, "") for p in partition_by) in parts
        files = [o for o in files if in_batch(o)]
    if not stored or not files:
        return [o["key"] for o in beside + files]
    by_path = {plain_path(o["url"]): o["key"] for o in files}
    keys = batch.select(*[q(k) for k in stored]).distinct()
    scan = (spark.read.option("basePath", m["prefix"]).parquet(*[o["url"] for o in files])
            .select(*[F.col(q(k)).cast(types[k]).alias(k) for k in stored],
                    F.input_file_name().alias("__file")))
    hit = scan.join(F.broadcast(keys), on=stored, how="left_semi").select("__file").distinct()
    found = {by_path.get(plain_path(r["__file"])) for r in hit.collect()}
    return [o["key"] for o in beside] + [o["key"] for o in files if o["key"] in found]


def old_rows(spark, m, keys, partition_by, fields):
    """The rows of the touched files, their partition columns from their folders, typed as
    `fields` (name, type) in that order."""
    urls = {o["key"]: o["url"] for o in m["current"]}
    out = None
    for key in keys:
        url = urls[key]
        df = spark.read.parquet(url)
        vals = partition_values(url, m["prefix"])
        for p in partition_by:
            v = vals.get(p)
            if v == "__HIVE_DEFAULT_PARTITION__":
                v = None
            df = df.withColumn(p, F.lit(v))
        df = df.select(*[F.col(q(n)).cast(t).alias(n) for n, t in fields])
        out = df if out is None else out.unionByName(df)
    if out is None:
        schema = ", ".join("%s %s" % (q(n), t.simpleString()) for n, t in fields)
        out = spark.createDataFrame([], schema)
    return out


def counts(spark, sql):
    row = spark.sql(sql).collect()[0]
    return {"inserted": row[0] or 0, "updated": row[1] or 0, "deleted": row[2] or 0}


def delete_expr(m):
    return "coalesce((%s), false)" % m["delete_when"] if m["delete_when"] else "false"


def latest(spark, m, names):
    """`merge`: per key, the latest row wins (the batch's on a tie with the stored row). As the
    embedded engine decides it: the stored rows hold one row per key, so only the batch needs a
    window (its latest row per key); a hash join of those winners with the stored rows then
    decides each key, and gives the counts."""
    cols = ", ".join(q(n) for n in names)
    keys = ", ".join(q(k) for k in m["key"])
    by = ("%s DESC NULLS LAST" % q(m["order_by"])) if m["order_by"] else "1"
    spark.sql(
        "SELECT * FROM (SELECT %s, %s AS __del, row_number() OVER (PARTITION BY %s ORDER BY %s) "
        "AS __rn FROM __batch) WHERE __rn = 1" % (cols, delete_expr(m), keys, by)
    ).createOrReplaceTempView("__bw")
    on = " AND ".join("o.%s <=> b.%s" % (q(k), q(k)) for k in m["key"])
    if m["order_by"]:
        o, b = "o.%s" % q(m["order_by"]), "b.%s" % q(m["order_by"])
        batch_wins = "NOT (%s IS NOT NULL AND (%s IS NULL OR %s < %s))" % (o, b, b, o)
    else:
        batch_wins = "true"
    sides = ", ".join("o.%s AS %s, b.%s AS %s" % (q(n), q("__o_" + n), q(n), q("__b_" + n))
                      for n in names)
    decided = spark.sql(
        "SELECT %s, o.__has IS NOT NULL AS __had_old, "
        "coalesce(b.__has AND (o.__has IS NULL OR %s), false) AS __new, "
        "coalesce(b.__del, false) AS __del FROM "
        "(SELECT *, true AS __has FROM __old) o FULL OUTER JOIN "
        "(SELECT *, true AS __has FROM __bw) b ON %s" % (sides, batch_wins, on)).persist()
    decided.createOrReplaceTempView("__decided")
    c = counts(spark,
               "SELECT count(*) FILTER (WHERE __new AND NOT __del AND NOT __had_old), "
               "count(*) FILTER (WHERE __new AND NOT __del AND __had_old), "
               "count(*) FILTER (WHERE __new AND __del AND __had_old) FROM __decided")
    picked = ", ".join(
        "CASE WHEN __new THEN %s ELSE %s END AS %s" % (q("__b_" + n), q("__o_" + n), q(n))
        for n in names)
    return spark.sql("SELECT %s FROM __decided WHERE NOT (__new AND __del)" % picked), c


def history(spark, m, names):
    """`history`: every version of each key, as the embedded engine keeps them: a batch row
    opens a version when it differs from the key's version before it and is later than the
    current one; the version before it closes at its `order_by` value; a delete closes the key."""
    h = m["history"]
    order = q(m["order_by"])
    keys = ", ".join(q(k) for k in m["key"])
    cols = ", ".join(q(n) for n in names)
    vf, vt, ic = q(h["valid_from"]), q(h["valid_to"]), q(h["is_current"])
    window = "PARTITION BY %s ORDER BY __from, __src DESC" % keys
    tracked = ["(%s <=> lag(%s) OVER (%s))" % (q(n), q(n), window) for n in names
               if n not in m["key"] and n != m["order_by"]]
    same = " AND ".join(tracked) if tracked else "true"
    kept = spark.sql(
        "SELECT * FROM ("
        " SELECT *, %s AS __same, lag(__src) OVER (%s) IS NULL AS __first,"
        " coalesce(lag(__del) OVER (%s), false) AS __prev_del FROM ("
        "  SELECT * FROM ("
        "   SELECT *, max(CASE WHEN __src = 1 THEN __from END) OVER (PARTITION BY %s) AS __cur_from"
        "   FROM (SELECT %s, %s AS __from, 1 AS __src, false AS __del FROM __old WHERE %s"
        "         UNION ALL SELECT %s, %s AS __from, 0 AS __src, %s AS __del FROM __batch))"
        "  WHERE __src = 1 OR __cur_from IS NULL OR __from > __cur_from))"
        " WHERE __src = 1 OR (NOT __del AND (__first OR __prev_del OR NOT __same))"
        " OR (__del AND NOT __first AND NOT __prev_del)"
        % (same, window, window, keys, cols, vf, ic, cols, order, delete_expr(m)))
    kept.createOrReplaceTempView("__kept")
    versions = spark.sql(
        "SELECT *, lead(__from) OVER (%s) AS __to, coalesce(lead(__del) OVER (%s), false) AS __to_del"
        " FROM __kept" % (window, window)).persist()
    versions.createOrReplaceTempView("__versions")
    c = counts(spark,
               "SELECT count(*) FILTER (WHERE __src = 0 AND NOT __del), "
               "count(*) FILTER (WHERE __src = 1 AND __to IS NOT NULL AND NOT __to_del), "
               "count(*) FILTER (WHERE __src = 0 AND __del) FROM __versions")
    merged = spark.sql(
        "SELECT %s, __from AS %s, __to AS %s, __to IS NULL AS %s FROM __versions WHERE NOT __del "
        "UNION ALL SELECT %s, %s, %s, %s FROM __old WHERE NOT %s"
        % (cols, vf, vt, ic, cols, vf, vt, ic, ic))
    return merged, c


def merge(spark, job, good, out):
    """Merge the batch `good` into the dataset: write the merged files under `out`, name the
    files they replace in `out`/_replaces.json; what changed."""
    m = job["merge"]
    partition_by = job["partition_by"]
    names = good.columns
    for c in m["key"] + ([m["order_by"]] if m["order_by"] else []):
        if c not in names:
            fail("merge column %r is not in the query's output (columns: %s)"
                 % (c, ", ".join(names)))
    good.createOrReplaceTempView("__batch")
    check_ties(spark, m)
    replaced = touched(spark, m, good, partition_by)
    fields = [(f.name, f.dataType) for f in good.schema.fields]
    h = m["history"]
    if h:
        ty = good.schema[m["order_by"]].dataType
        for name in (h["valid_from"], h["valid_to"], h["is_current"]):
            if name in names:
                fail("the query's output has a column %r, which history keeps itself; name it "
                     "otherwise, or choose other history_columns" % name)
        from pyspark.sql.types import BooleanType
        fields += [(h["valid_from"], ty), (h["valid_to"], ty), (h["is_current"], BooleanType())]
    old_rows(spark, m, replaced, partition_by, fields).createOrReplaceTempView("__old")
    merged, c = (history if h else latest)(spark, m, names)
    order = m["key"] + ([h["valid_from"]] if h else [])
    merged = merged.persist()
    kept = len(m["current"]) - len(replaced)
    if merged.limit(1).count() == 0:
        # Every row of the touched files went: they go, and nothing replaces them; a dataset
        # left with no file keeps its columns in one empty file, as the embedded engine does.
        if kept == 0:
            merged.coalesce(1).write.mode("overwrite").parquet(out)
    elif partition_by:
        (merged.repartition(*[F.col(q(p)) for p in partition_by])
         .sortWithinPartitions(*[F.col(q(x)) for x in partition_by + order])
         .write.mode("overwrite").partitionBy(*partition_by).parquet(out))
    else:
        merged.orderBy(*[F.col(q(x)) for x in order]).write.mode("overwrite").parquet(out)
    write_text(spark, out + "/_replaces.json", json.dumps({"keys": replaced}))
    c["rewritten_files"] = len(replaced)
    c["kept_files"] = kept
    return c


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
    merged = None
    if job.get("merge"):
        merged = merge(spark, job, good, out)
    else:
        writer = good.write.mode("overwrite")
        if job["partition_by"]:
            writer = writer.partitionBy(*job["partition_by"])
        writer.parquet(out)
    if rejected:
        bad.write.mode("overwrite").parquet(out + "/_rejected")
    rows = good.count()
    metrics = {"rows": rows, "rejected": rejected, "reasons": reasons}
    if merged is not None:
        metrics["merged"] = merged
    write_text(spark, out + "/_metrics.json", json.dumps(metrics))
    spark.stop()


if __name__ == "__main__":
    main()
