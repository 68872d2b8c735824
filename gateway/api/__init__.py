"""HTTP controllers: the OpenAI API, Freshet's admin API."""
