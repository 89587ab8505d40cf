"""One small loop per training mode."""
