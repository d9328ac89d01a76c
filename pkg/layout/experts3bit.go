package layout

// Experts3BitDir is the expert directory fm-requant2bit --bits 3 writes (same
// file names as ExpertsDir; selected with fm-infer --3bit).
const Experts3BitDir = "packed_experts_3bit"
