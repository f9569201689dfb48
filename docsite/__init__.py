"""The documentation site's own code (not part of reflectkit): a griffe extension, the build
hooks and the llms.txt generator that mkdocs.yml names."""
