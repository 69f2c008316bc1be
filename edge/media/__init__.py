"""Media maths (sans-IO, numpy): G.711 codecs and the stereo call recorder."""
