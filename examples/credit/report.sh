#!/bin/sh
# Loans per purpose from the run's raw window: purpose, n, avg_credit_amount, avg_duration.
set -eu
date="$1"
window="$LAKE_INPUT_RAW_CREDIT/ingest_date=$date"
awk -F, '
  { sub(/\r$/, "") }                      # the file has CRLF line endings
  FNR == 1 { next }                       # each file has a header
  { n[$10]++; amount[$10] += $8; duration[$10] += $9 }
  END {
    print "purpose,n,avg_credit_amount,avg_duration"
    for (p in n) printf "%s,%d,%.2f,%.2f\n", p, n[p], amount[p] / n[p], duration[p] / n[p]
  }' "$window"/*.csv | { read -r header; echo "$header"; sort; } > "$LAKE_OUTPUT/credit_by_purpose.csv"
echo "wrote $(($(wc -l < "$LAKE_OUTPUT/credit_by_purpose.csv") - 1)) purposes for $date"
