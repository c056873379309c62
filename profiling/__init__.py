"""qsplit profiling (optional extra, torch only here): profiles and measured sensitivities.

The planner reads *profiles* (``system/data/profiles/<name>.json``, format
``qsplit-profile/1``): per unit ``macs``, ``params``, ``out_elems`` and the accuracy
sensitivities ``sens_w`` / ``sens_a`` of DESIGN.md §1 (drop_pp = sens * (2^b - 1)^-2).
This package makes them from real networks:

  tracing.py       torch.fx tracing, cut points, per-operation FLOPs and tensor sizes
  profiler.py      units, MACs, params, out_elems of any traceable torch.nn.Module, and the
                   planner's profile of it (system.profiles.ModelProfile, its validator)
  digits.py        the digits networks (sklearn's bundled 8x8 digits): data split, training,
                   weights; digits_resnet.py the residual one
  quantize.py      the weight and activation quantizers a plan applies
  chain.py         a network as a chain of units: run a system.plan.Plan, measure its drop
  calibrate.py     one-tensor-at-a-time calibration at every width, fit, per-width law table
  compounding.py   drop = g(additive sum): candidates, CV choice, knots, safety margin
  netcal.py        calibration and validation of a digits network, end to end
  safety.py        stratified mixed plans, safe rate, safety factor (system.accuracy's law)
  sensitivity_sources.py   HAWQ-V3 figures (ResNet-18) and the documented proxy law
  architectures.py the shipped ImageNet architecture profiles (torchvision definitions)

Commands (``python -m profiling <command> --help`` for options):

  profile MODULE:FACTORY --input-shape C H W --name NAME --base-accuracy PCT [--out PATH]
      Profile your own model. FACTORY is any callable returning an nn.Module (a class
      works), MODULE a dotted module path or a ``file.py``. Example:
        python -m profiling profile mynet.py:Net --input-shape 3 32 32 --name mynet \\
            --base-accuracy 91.2 --out system/data/profiles/
      The model must be traceable by torch.fx; mark untraceable blocks with
      ``--leaf mynet.py:Block`` (they become opaque ops). Cuts are placed wherever exactly
      one tensor is alive; conv+BN+ReLU stay together, a residual block is one unit. The
      sensitivities it writes are a *proxy* (``"sensitivity_source": "proxy"``); to measure
      them on your own data, in Python:
        from profiling.profiler import profile_module, split_units
        from profiling.chain import Chain
        from profiling.calibrate import calibrate
        prof = profile_module(model, (3, 32, 32))
        chain = Chain(split_units(prof), x_heldout, y_heldout)
        cal = calibrate(chain)            # every planner width, round-to-nearest
        # cal.sens_w / cal.sens_a in pp; then profiler.model_profile(..., "measured", ...),
        # with evidence=netcal.evidence_of(chain, cal.bits) and, from mixed plans measured
        # on the same data, compounding=compounding.fit_compounding(s_pp, measured_pp)
        # (dataclasses.replace); netcal.calibrate_net does all of it for the digits networks

  train-digits [--net digits_cnn|digits_resnet]
                       train a digits network (fixed seed, ~20-30 s on one CPU thread) and
                       write profiling/data/<net>.npz + <net>.json (test accuracy)
  calibrate-digits [--net digits_cnn|digits_resnet]
                       measure its sensitivities (every width, round-to-nearest), evidence and
                       compounding correction on the calibration half, write
                       system/data/profiles/<net>.json (about a minute)
  arch-profiles [NAME ...]
                       regenerate alexnet, vgg16, resnet18, resnet50, mobilenet_v2 profiles
                       from torchvision's definitions (needs digits_cnn.json for the
                       activation proxy ratio)

Regenerating the architecture profiles needs torchvision, which is not a dependency: the
committed JSON files are all the project reads. torchvision from PyPI must match the torch
it imports beside; in this project's environment (torch 2.13.0 CPU, no matching
torchvision) use a separate venv:

    python3 -m venv .venv-tv
    .venv-tv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy
    .venv-tv/bin/python -m profiling arch-profiles

(No weights are downloaded: MACs and parameters come from the model definitions, the
published accuracy from torchvision's weight metadata.) Everything else here runs with the
project's own torch.

Validation of the accuracy model: ``python benchmarks/bench_accuracy_model.py``.
"""
