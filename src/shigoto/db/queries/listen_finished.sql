LISTEN "__schema__.jobs_finished"
