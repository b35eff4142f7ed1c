# The course's commands. `make figures` and `make test` set up a local virtual environment (.venv) first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
DATA ?= ../shared/data/celeba-6k.zip
# The training run lives outside the work tree so that it survives a fresh checkout; resumable.
RUN ?= $(HOME)/.cache/diffusion-course/runs/faces32-15k
# The shipped model after 4,500 iterations, which the 15,000-iteration run continued from.
INIT ?= helpers/weights/faces32

.PHONY: setup figures test test-unit test-notebooks lab colab train export-model evaluate evaluate-inverse benchmark clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[lab,dev]"
	touch $(STAMP)

## Run every notebook top to bottom on the embedded model (CPU), saving outputs and regenerating figures/.
figures: $(STAMP)
	@for nb in $(NOTEBOOKS); do \
		echo "== $$nb"; \
		$(PY) -m jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.timeout=1800 "$$nb" || exit 1; \
	done

## All tests: the helpers' unit tests, then every notebook under nbval (`make test-unit` and `make test-notebooks` run
## one of them). One after the other: side by side on two cores, each process's two torch threads wait on each other.
test: test-unit test-notebooks

test-unit: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests

test-notebooks: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider --nbval-lax $(NOTEBOOKS)

## The student version of every notebook (solutions replaced by a stub, outputs cleared) in student/notebooks/.
student: $(STAMP)
	$(PY) scripts/make_student.py $(NOTEBOOKS)

## Study interactively.
lab: $(STAMP)
	$(PY) -m jupyter lab notebooks/

## Rewrite every notebook's "Open in Colab" badge and Colab install cell from pyproject.toml's Repository URL.
colab: $(STAMP)
	$(PY) scripts/colab_cells.py

## Train the embedded model (resumable: run it again to continue), on identities celeb_0..celeb_179 only: 10,500
## iterations warm-started from the 4,500-iteration model (15,000 in all), cosine learning-rate decay to 3e-5.
train: $(STAMP)
	$(PY) -m helpers.train --data $(DATA) --out $(RUN) --init $(INIT) \
		--exclude 'celeba-6k/celeb_18?/*' --exclude 'celeba-6k/celeb_19?/*' \
		--crop-box 19,39,159,179 --steps 10500 --batch-size 32 --lr 3e-4 --warmup 200 \
		--lr-schedule cosine --min-lr 3e-5 --bf16 --threads 1 --checkpoint-every 500

## Copy the run's EMA weights into the package and write the model card (recipe, loss, both sample grids, the
## evaluation against OLD, speed), then the held-out loss per t that notebook 08 plots (scripts/loss_by_t.py).
## INIT_ITERATIONS: the iterations of the model the run was warm-started from.
## OLD defaults to the shipped model before the export; on a second export, pass OLD= the 4,500-iteration model
## restored from git (see scripts/export_model.py).
INIT_ITERATIONS ?= 4500
export-model: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) scripts/export_model.py --run $(RUN) --data $(DATA) \
		--init-iterations $(INIT_ITERATIONS) $(if $(OLD),--old $(OLD))
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) scripts/loss_by_t.py --data $(DATA)

## Held-out quality of NEW (default: the shipped model), or of NEW against OLD on the same draws: denoising loss
## by bands of t, single-step x0_hat against the best Gaussian filter, 64 DDPM samples each (in EVALUATE_OUT).
## EVALUATE_ARGS adds options, e.g. EVALUATE_ARGS=--skip-samples or EVALUATE_ARGS="--sample-steps 100".
## make evaluate OLD=helpers/weights/faces32 NEW=$(RUN)/ema
EVALUATE_OUT ?= runs/evaluate_model
evaluate: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) scripts/evaluate_model.py --data $(DATA) \
		$(if $(OLD),--old $(OLD)) $(if $(NEW),--new $(NEW)) --samples-dir $(EVALUATE_OUT) $(EVALUATE_ARGS)

## Inverse problems x methods over the held-out faces, as one table (scripts/evaluate_inverse.py; resumable;
## docs/evaluate_inverse.md). NPROC processes (CPU processes over gloo, or one per GPU); EVAL_ARGS adds options.
NPROC ?= 1
EVAL_OUT ?= runs/evaluate_inverse
# One process needs no launcher; Accelerate's launcher starts a process group (GPUs, or CPU processes over gloo)
# only with --multi_gpu, which it refuses for a single process.
EVAL_LAUNCH = $(if $(filter 1,$(NPROC)),$(PY),$(VENV)/bin/accelerate launch --multi_gpu --num_processes $(NPROC) \
	--num_machines 1 --mixed_precision no --dynamo_backend no)
evaluate-inverse: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(EVAL_LAUNCH) scripts/evaluate_inverse.py --data $(DATA) \
		--include 'celeba-6k/celeb_18?/*' --include 'celeba-6k/celeb_19?/*' --crop-box 19,39,159,179 \
		--out $(EVAL_OUT) $(EVAL_ARGS)

## Speed on this machine: the model's forward pass, the samplers' overhead, DPS against deepinv's DPS.
benchmark: $(STAMP)
	$(PY) scripts/benchmark_model.py
	$(PY) scripts/benchmark_samplers.py
	$(PY) scripts/benchmark_posterior.py --data $(DATA)

clean:
	rm -rf $(VENV) .pytest_cache
