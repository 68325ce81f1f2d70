"""The file MLflow logs as the pyfunc's code (models from code), instead of a pickled object.

MLflow copies this file into the logged model and runs it when the model is loaded; it names
:class:`training.pyfunc.ShoprecModel` from the installed ``shoprec`` package, so no object is
serialised with CloudPickle and loading executes only this file and that package.
"""

import mlflow

from training.pyfunc import ShoprecModel

mlflow.models.set_model(ShoprecModel())
