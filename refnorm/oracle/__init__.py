"""refnorm's oracle tooling: everything that judges an implementation, built on :mod:`refnorm.ops`.

* :mod:`~refnorm.oracle.gradient_check`: the finite-difference gradient checker (``refnorm.gradcheck``);
* :mod:`~refnorm.oracle.catalog`: the ops and their named cases (sample, reference, error);
* :mod:`~refnorm.oracle.evaluation`: a case evaluated into named arrays on any backend, and
  :func:`~refnorm.oracle.evaluation.gradcheck_case`, the gradient check of one catalog case;
* :mod:`~refnorm.oracle.tolerances`: per-dtype tolerances and located comparisons;
* :mod:`~refnorm.oracle.golden`: golden files (generate, verify, read);
* :mod:`~refnorm.oracle.compare`: another implementation's results judged against a golden set
  (``refnorm golden compare``);
* :mod:`~refnorm.oracle.reports`: the JSON and JUnit XML reports of every verdict;
* :mod:`~refnorm.oracle.conformance`: the conformance kit (public as :mod:`refnorm.testing`).

The rule that keeps the two tiers apart: :mod:`refnorm.ops` imports nothing from here.
"""
