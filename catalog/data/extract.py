#!/usr/bin/env python3
"""Rebuilds catalog/data/*.csv from /work/shared/data/pricing (see data/ATTRIBUTION.md).

Selection only: rows and columns are picked, values are copied as text, nothing is computed.
Run: python3 catalog/data/extract.py /work/shared/data/pricing catalog/data
"""
import csv, json, shutil, sys, os

src, dst = sys.argv[1], sys.argv[2]

# Verbatim copies (byte-identical; the code picks the latest on-demand segment per type).
for f in ["aws_gpu_instance_specs.csv", "aws_ondemand_gpu_us-east-1_history.csv"]:
    shutil.copyfile(os.path.join(src, f), os.path.join(dst, f))

# Spot Advisor, 2025 snapshot, Linux, every region (the extender scores spot nodes in any
# region with it; the price tables above cover fewer regions).
cols = ["snapshot_date", "region", "instance_type", "interruption_range_index",
        "interruption_range_label", "savings_vs_ondemand_pct"]
with open(os.path.join(src, "aws_spot_advisor_gpu.csv")) as fi, \
     open(os.path.join(dst, "aws_spot_advisor_gpu_2025.csv"), "w", newline="") as fo:
    w = csv.writer(fo, lineterminator="\n")
    w.writerow(cols)
    for r in csv.DictReader(fi):
        if r["snapshot_date"].startswith("2025") and r["os"] == "Linux":
            w.writerow([r[c] for c in cols])

# Spot Advisor interruption ranges (label and AWS's own upper bound) from the 2025 JSON.
with open(os.path.join(src, "aws_spot_advisor_2025-06-28.json")) as fi, \
     open(os.path.join(dst, "aws_spot_advisor_ranges_2025.csv"), "w", newline="") as fo:
    w = csv.writer(fo, lineterminator="\n")
    w.writerow(["index", "label", "max"])
    for r in json.load(fi)["ranges"]:
        w.writerow([r["index"], r["label"], r["max"]])

# GCP latest prices, the columns we use.
cols = ["machine_type", "gpu_type", "gpu_count", "vcpus", "ram_gb", "region", "hour_usd",
        "hour_spot_usd", "month_usd", "month_1y_usd"]
with open(os.path.join(src, "gcp_gpu_vm_prices_latest.csv")) as fi, \
     open(os.path.join(dst, "gcp_gpu_vm_prices_latest.csv"), "w", newline="") as fo:
    w = csv.writer(fo, lineterminator="\n")
    w.writerow(cols)
    for r in csv.DictReader(fi):
        w.writerow([r[c] for c in cols])

# Azure on-demand (Linux pay-as-you-go), the columns we use.
cols = ["region", "vm_sku", "ondemand_usd_per_hour_linux"]
with open(os.path.join(src, "azure_ondemand_gpu_skus.csv")) as fi, \
     open(os.path.join(dst, "azure_ondemand_gpu_skus.csv"), "w", newline="") as fo:
    w = csv.writer(fo, lineterminator="\n")
    w.writerow(cols)
    for r in csv.DictReader(fi):
        w.writerow([r[c] for c in cols])
