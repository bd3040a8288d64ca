-- One database per service (each service owns its tables).
CREATE DATABASE enterprises;
CREATE DATABASE demand;
CREATE DATABASE mentoring;
CREATE DATABASE gateway;
