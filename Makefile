# nfebench: `make demo` and `make test` work on a fresh clone with nothing installed by hand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.nfebench-installed

.PHONY: demo test test-slow test-slurm reproduce report-browser train clean-venv

# One venv with the package (editable), its dev extras and the Hydra launchers. torch and torchvision come
# together from the package registry, so they always match.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,launchers,t2i]'
	$(PY) -m pip install -q --no-deps k-diffusion==0.1.1.post1  # conformance reference (tests import its sampling module alone)
	touch $(STAMP)

## demo: set up, then run DPM-Solver at 10 NFE on the embedded digits model (appends a row to results/leaderboard.csv)
demo: $(STAMP)
	$(PY) -m nfebench sampler=dpm nfe=10 force=true

## test: set up, then run the test suite (slow tests excluded; `make test-slow` runs them)
test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

## test-slurm: start a real single-node SLURM with accounting (needs root; installs Debian's slurm-wlm, munge,
## MariaDB if missing), run sweeps, a cancelled job and a sharded point through it, stop it (a few minutes)
test-slurm: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -s -m slurm tests/slurm

## reproduce: the survey's CIFAR-10 layout on the embedded digits model and on the exact-score oracle, then the report
## (points already in results/leaderboard.csv are skipped; 2 parallel single-thread workers)
reproduce: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m nfebench -m experiment=survey_cifar10 hydra/launcher=joblib hydra.launcher.n_jobs=2
	OMP_NUM_THREADS=1 $(PY) -m nfebench -m experiment=survey_cifar10 model=gmm_digits hydra/launcher=joblib hydra.launcher.n_jobs=2
	OMP_NUM_THREADS=1 $(PY) -m nfebench -m experiment=survey_cifar10 sampler=ddpm sampler.spacing=elbo
	OMP_NUM_THREADS=1 $(PY) -m nfebench -m experiment=survey_cifar10 sampler=ddpm sampler.spacing=elbo model=gmm_digits
	OMP_NUM_THREADS=1 $(PY) -m nfebench -m experiment=survey_cifar10 sampler=rk45,ggf nfe=1000 model=digits_ddpm,gmm_digits hydra/launcher=joblib hydra.launcher.n_jobs=2
	OMP_NUM_THREADS=1 $(PY) -m nfebench -m experiment=survey_cifar10 sampler=dpm sampler.method=adaptive sampler.order=2,3 nfe=1000 model=digits_ddpm,gmm_digits hydra/launcher=joblib hydra.launcher.n_jobs=2
	OMP_NUM_THREADS=1 $(PY) -m nfebench -m experiment=survey_cifar10 sampler=euler_ancestral,dpmpp_2s_ancestral,dpmpp_sde,dpmpp_2m_sde,dpmpp_3m_sde,er_sde,sa_solver model=digits_ddpm,gmm_digits hydra/launcher=joblib hydra.launcher.n_jobs=2
	OMP_NUM_THREADS=1 $(PY) -m nfebench -m experiment=survey_cifar10 sampler=ui/dpmpp_2m_karras,ui/dpmpp_2m_sde_karras,ui/dpmpp_3m_sde_exponential,ui/euler_a hydra/launcher=joblib hydra.launcher.n_jobs=2
	OMP_NUM_THREADS=1 $(PY) -m nfebench -m experiment=nll_vs_k hydra/launcher=joblib hydra.launcher.n_jobs=2
	# flow section (issue 26): digits_flow beside digits_ddpm, same seeds (paired), NFE 5-50; their ODE NLLs
	OMP_NUM_THREADS=1 $(PY) -m nfebench -m experiment=flow_vs_ddpm hydra/launcher=joblib hydra.launcher.n_jobs=2
	OMP_NUM_THREADS=1 $(PY) -m nfebench -m model=digits_flow,digits_ddpm sampler=dpmpp nfe=10 metrics=nll metrics.nll=ode metrics.nll_nfe=20 metrics.nll_num_images=32
	$(PY) -m nfebench.report --results results

## report-browser: open results/report.html in headless Chromium (no console error, images load, sorting and filtering
## work) and save docs/report_html.png; skips when chromium is not installed (apt-get install chromium)
report-browser: $(STAMP)
	NFEBENCH_REPORT_HTML=results/report.html NFEBENCH_SCREENSHOT=docs/report_html.png \
		$(PY) -m pytest -q -m slow -rs tests/test_report_export.py::test_report_html_in_headless_chromium

## train: retrain the embedded models (about 25 min on 2 CPU cores); see checkpoints/*/README.md
train: $(STAMP)
	$(PY) -m nfebench.train ddpm --steps 8000 --batch-size 128 --lr 1e-3 --out checkpoints/digits-ddpm
	$(PY) -m nfebench.train classifier --steps 3000 --threads 1 --out checkpoints/digits-cnn
	$(PY) -m nfebench.train flow --steps 2000 --threads 1 --out checkpoints/digits-flow

clean-venv:
	rm -rf $(VENV)
