"""gRPC plumbing shared by the services: server bootstrap (health, reflection, metrics), errors, clients."""
