import sys

from eegdino_tf.cli import main

sys.exit(main())
