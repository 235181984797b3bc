"""Neural-network modules: local message passing, global attention, the GPS layer and model."""
