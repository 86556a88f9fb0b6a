"""``python -m sgmcmc`` runs the demo (see :mod:`sgmcmc.demo`)."""

from sgmcmc.demo import main

if __name__ == "__main__":
    main()
