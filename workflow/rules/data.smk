# Data: obtain the source (phantom, Synapse or KiTS19 download, zip, folder, KiTS19 or LiTS folder or zip,
# or TransUNet import),
# split it by patient and preprocess it into the prepared HDF5 dataset.


rule phantom:
    input:
        code=code("phantom"),
    output:
        directory(LAYOUT.phantom),
    log:
        LAYOUT.log("phantom"),
    benchmark:
        LAYOUT.benchmark("phantom")
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
        SOURCE.downloaded if SOURCE.packed == "zip" else directory(SOURCE.downloaded),
    log:
        LAYOUT.log("download"),
    benchmark:
        LAYOUT.benchmark("download")
    conda:
        ENV
    params:
        what=sources.download_arguments(DATA),
        timeout=DATA["download_timeout"],
    shell:
        "hkd download {params.what} --out {output} --timeout {params.timeout} > {log} 2>&1"


rule extract:
    input:
        zip=lambda w: SOURCE.archive,
        code=code("extract"),
    output:
        directory(LAYOUT.extracted("{kind}")),
    log:
        LAYOUT.log("extract_{kind}"),
    benchmark:
        LAYOUT.benchmark("extract_{kind}")
    wildcard_constraints:
        kind=SOURCE.extracted,
    conda:
        ENV
    params:
        md5=f"--md5 {DATA['md5']}" if DATA["md5"] else "",
    shell:
        "hkd extract --zip {input.zip} --out {output} {params.md5} > {log} 2>&1"


rule split:
    input:
        source=SOURCE.raw_source(),
        files=SOURCE.source_files(),
        split_file=SOURCE.split_file(),
        code=code("split", [SOURCE.reader]),
    output:
        LAYOUT.split,
    log:
        LAYOUT.log("split"),
    benchmark:
        LAYOUT.benchmark("split")
    conda:
        ENV
    params:
        format=SOURCE.format,
        preset=DATA["split"]["preset"],
        ratios=DATA["split"]["ratios"],
        seed=DATA["split"]["seed"],
        file=lambda w, input: f"--file {input.split_file}" if input.split_file else "",
    shell:
        "hkd split --source {input.source} --format {params.format} --preset {params.preset}"
        " --ratios {params.ratios} --seed {params.seed} {params.file} --out {output} > {log} 2>&1"


# How cases become slices (the study's own and an external cohort's alike).
PREPARATION = as_json(
    {
        k: DATA[k]
        for k in ("image_size", "hu_window", "scale", "task", "label_map", "classes")
    }
)


rule prepare:
    input:
        source=SOURCE.raw_source(),
        files=SOURCE.source_files(),
        split=rules.split.output[0],
        code=code("prepare", [SOURCE.reader]),
    output:
        directory(LAYOUT.prepared),
    log:
        LAYOUT.log("prepare"),
    benchmark:
        LAYOUT.benchmark("prepare")
    conda:
        ENV
    params:
        format=SOURCE.format,
        prep=PREPARATION,
    shell:
        "hkd prepare --source {input.source} --format {params.format} --split {input.split}"
        " --params '{params.prep}' --out {output} --quiet > {log} 2>&1"


# What the prepared data holds per split, for the report.
rule describe_data:
    input:
        data=rules.prepare.output[0],
        code=code("describe-data"),
    output:
        csv=LAYOUT.table("data"),
        html=report(
            LAYOUT.table("data", "html"),
            caption="../report/data.rst",
            category="Tables",
        ),
    log:
        LAYOUT.log("describe_data"),
    benchmark:
        LAYOUT.benchmark("describe_data")
    conda:
        ENV
    shell:
        "hkd describe-data --data {input.data} --out {output.csv} --out-html {output.html} > {log} 2>&1"
