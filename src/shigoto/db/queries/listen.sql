LISTEN "__schema__.jobs_inserted";
LISTEN "__schema__.control"
