"""rates: a JSON API of average daily shipping prices between ports."""
