"""Using a trained run: ``detector`` (load, score, decide), ``score`` (CSV CLI), ``export``
(SavedModel) and ``explain`` (attributions). Nothing is imported here."""
