"""Step functions used by the example DAGs in dags/."""
