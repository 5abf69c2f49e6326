"""refnorm's oracle tooling: everything that judges an implementation, built on :mod:`refnorm.ops`.

* :mod:`~refnorm.oracle.gradient_check`: the finite-difference gradient checker (``refnorm.gradcheck``);
* :mod:`~refnorm.oracle.catalog`: the ops and their named cases (sample, reference, error);
* :mod:`~refnorm.oracle.evaluation`: a case evaluated into named arrays on any backend;
* :mod:`~refnorm.oracle.tolerances`: per-dtype tolerances and located comparisons;
* :mod:`~refnorm.oracle.golden`: golden files (generate, verify, read);
* :mod:`~refnorm.oracle.conformance`: the conformance kit (public as :mod:`refnorm.testing`).

The rule that keeps the two tiers apart: :mod:`refnorm.ops` imports nothing from here.
"""
