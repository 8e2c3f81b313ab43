# Data: obtain the source (phantom, Synapse or KiTS19 download, zip, folder, KiTS19 or LiTS folder or zip,
# or TransUNet import),
# split it by patient and preprocess it into the prepared HDF5 dataset.


rule phantom:
    input:
        code=code("phantom"),
    output:
        directory(f"{OUT}/raw/phantom"),
    log:
        f"{OUT}/logs/phantom.log",
    benchmark:
        f"{OUT}/benchmarks/phantom.tsv"
    conda:
        ENV
    params:
        **{k: v for k, v in DATA["phantom"].items() if k != "tumours"},
        tumours=(
            f"--tumours '{as_json(DATA['phantom']['tumours'])}'"
            if DATA["phantom"]["tumours"] is not None
            else ""
        ),
    shell:
        "hkd phantom --out {output} --cases {params.cases} --seed {params.seed} --size {params.size}"
        " --slices {params.slices} --spacing-xy {params.spacing_xy}"
        " --slice-thickness {params.slice_thickness} --layout {params.layout} {params.tumours} > {log} 2>&1"


rule download:
    input:
        code=code("download"),
    output:
        STUDY.downloaded if STUDY.packed == "zip" else directory(STUDY.downloaded),
    log:
        f"{OUT}/logs/download.log",
    benchmark:
        f"{OUT}/benchmarks/download.tsv"
    conda:
        ENV
    params:
        what=sources.download_arguments(DATA),
        timeout=DATA["download_timeout"],
    shell:
        "hkd download {params.what} --out {output} --timeout {params.timeout} > {log} 2>&1"


rule extract:
    input:
        zip=lambda w: STUDY.archive,
        code=code("extract"),
    output:
        directory(f"{OUT}/raw/{{kind}}/RawData"),
    log:
        f"{OUT}/logs/extract_{{kind}}.log",
    benchmark:
        f"{OUT}/benchmarks/extract_{{kind}}.tsv"
    wildcard_constraints:
        kind=STUDY.extracted,
    conda:
        ENV
    params:
        md5=f"--md5 {DATA['md5']}" if DATA["md5"] else "",
    shell:
        "hkd extract --zip {input.zip} --out {output} {params.md5} > {log} 2>&1"


rule split:
    input:
        source=STUDY.raw_source(),
        files=STUDY.source_files(),
        split_file=STUDY.split_file(),
        code=code("split", [STUDY.reader]),
    output:
        f"{OUT}/data/split.json",
    log:
        f"{OUT}/logs/split.log",
    benchmark:
        f"{OUT}/benchmarks/split.tsv"
    conda:
        ENV
    params:
        format=STUDY.source_format,
        preset=DATA["split"]["preset"],
        ratios=DATA["split"]["ratios"],
        seed=DATA["split"]["seed"],
        file=lambda w, input: f"--file {input.split_file}" if input.split_file else "",
    shell:
        "hkd split --source {input.source} --format {params.format} --preset {params.preset}"
        " --ratios {params.ratios} --seed {params.seed} {params.file} --out {output} > {log} 2>&1"


rule prepare:
    input:
        source=STUDY.raw_source(),
        files=STUDY.source_files(),
        split=rules.split.output[0],
        code=code("prepare", [STUDY.reader]),
    output:
        directory(f"{OUT}/data/prepared"),
    log:
        f"{OUT}/logs/prepare.log",
    benchmark:
        f"{OUT}/benchmarks/prepare.tsv"
    conda:
        ENV
    params:
        format=STUDY.source_format,
        prep=as_json(
            {
                k: DATA[k]
                for k in (
                    "image_size",
                    "hu_window",
                    "scale",
                    "task",
                    "label_map",
                    "classes",
                )
            }
        ),
    shell:
        "hkd prepare --source {input.source} --format {params.format} --split {input.split}"
        " --params '{params.prep}' --out {output} --quiet > {log} 2>&1"


# What the prepared data holds per split, for the report.
rule describe_data:
    input:
        data=rules.prepare.output[0],
        code=code("describe-data"),
    output:
        csv=f"{OUT}/tables/data.csv",
        html=report(
            f"{OUT}/tables/data.html",
            caption="../report/data.rst",
            category="Tables",
        ),
    log:
        f"{OUT}/logs/describe_data.log",
    benchmark:
        f"{OUT}/benchmarks/describe_data.tsv"
    conda:
        ENV
    shell:
        "hkd describe-data --data {input.data} --out {output.csv} --out-html {output.html} > {log} 2>&1"
