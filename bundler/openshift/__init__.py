"""OpenShift content: image-set configs, releases, samples, operator catalogs, update graph, cluster resources."""
