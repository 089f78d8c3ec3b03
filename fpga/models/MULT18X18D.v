// Behavioural model of the ECP5 MULT18X18D as rtl/dsp.py instantiates it, for simulation
// (Yosys ships only a black box of this cell).
//
// P = A * B, each operand signed when SIGNEDA / SIGNEDB is high, through the registers that
// REG_INPUTA_CLK, REG_INPUTB_CLK, REG_PIPELINE_CLK and REG_OUTPUT_CLK enable: "NONE" or
// "CLK0", with clock enable CE0 and synchronous reset RST0 (reset wins over the enable).
// Other clocks, enables, resets, the C input, the shift chains and cascading are not modelled;
// an instance that asks for them stops the simulation at time 0.
`default_nettype none
// String parameters compare at the width of the longer string.
/* verilator lint_off WIDTH */
module MULT18X18D (
    input  wire A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15, A16, A17,
    input  wire B0, B1, B2, B3, B4, B5, B6, B7, B8, B9, B10, B11, B12, B13, B14, B15, B16, B17,
    input  wire C0, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13, C14, C15, C16, C17,
    input  wire SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    input  wire CLK0, CE0, RST0,
    output wire P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, P11, P12, P13, P14, P15, P16, P17,
    output wire P18, P19, P20, P21, P22, P23, P24, P25, P26, P27, P28, P29, P30, P31, P32, P33,
    output wire P34, P35
);
    parameter REG_INPUTA_CLK = "NONE";
    parameter REG_INPUTA_CE = "CE0";
    parameter REG_INPUTA_RST = "RST0";
    parameter REG_INPUTB_CLK = "NONE";
    parameter REG_INPUTB_CE = "CE0";
    parameter REG_INPUTB_RST = "RST0";
    parameter REG_INPUTC_CLK = "NONE";
    parameter REG_PIPELINE_CLK = "NONE";
    parameter REG_PIPELINE_CE = "CE0";
    parameter REG_PIPELINE_RST = "RST0";
    parameter REG_OUTPUT_CLK = "NONE";
    parameter REG_OUTPUT_CE = "CE0";
    parameter REG_OUTPUT_RST = "RST0";
    parameter CAS_MATCH_REG = "FALSE";
    // accepted for the instance's sake; they change nothing the model computes
    /* verilator lint_off UNUSEDPARAM */
    parameter CLK0_DIV = "ENABLED";
    parameter HIGHSPEED_CLK = "NONE";
    parameter GSR = "ENABLED";
    parameter SOURCEB_MODE = "B_SHIFT";
    /* verilator lint_on UNUSEDPARAM */
    parameter MULT_BYPASS = "DISABLED";
    parameter RESETMODE = "SYNC";

    localparam IN_A = REG_INPUTA_CLK == "CLK0";
    localparam IN_B = REG_INPUTB_CLK == "CLK0";
    localparam PIPE = REG_PIPELINE_CLK == "CLK0";
    localparam OUT = REG_OUTPUT_CLK == "CLK0";

    generate
        if ((REG_INPUTA_CLK != "NONE" && !IN_A) || (REG_INPUTB_CLK != "NONE" && !IN_B)
                || (REG_PIPELINE_CLK != "NONE" && !PIPE) || (REG_OUTPUT_CLK != "NONE" && !OUT)
                || REG_INPUTC_CLK != "NONE" || REG_INPUTA_CE != "CE0"
                || REG_INPUTB_CE != "CE0" || REG_PIPELINE_CE != "CE0"
                || REG_OUTPUT_CE != "CE0" || REG_INPUTA_RST != "RST0"
                || REG_INPUTB_RST != "RST0" || REG_PIPELINE_RST != "RST0"
                || REG_OUTPUT_RST != "RST0" || RESETMODE != "SYNC"
                || MULT_BYPASS != "DISABLED" || CAS_MATCH_REG != "FALSE") begin : unsupported
            initial $fatal(1, "MULT18X18D model: only CLK0 / CE0 / RST0 registers are modelled");
        end
    endgenerate

    wire [17:0] a = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2,
                     A1, A0};
    wire [17:0] b = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2,
                     B1, B0};
    reg [17:0] a_q, b_q;
    reg sa_q, sb_q;
    always @(posedge CLK0) begin
        if (RST0) begin
            a_q <= 18'd0;
            b_q <= 18'd0;
            sa_q <= 1'b0;
            sb_q <= 1'b0;
        end else if (CE0) begin
            a_q <= a;
            b_q <= b;
            sa_q <= SIGNEDA;
            sb_q <= SIGNEDB;
        end
    end
    wire [17:0] a_in = IN_A ? a_q : a;
    wire [17:0] b_in = IN_B ? b_q : b;
    wire sa = IN_A ? sa_q : SIGNEDA;
    wire sb = IN_B ? sb_q : SIGNEDB;
    wire [35:0] a_ext = {{18{sa & a_in[17]}}, a_in};
    wire [35:0] b_ext = {{18{sb & b_in[17]}}, b_in};
    wire [35:0] product = a_ext * b_ext;  // the low 36 bits of the product of the extensions

    reg [35:0] pipe_q, out_q;
    always @(posedge CLK0) begin
        if (RST0) begin
            pipe_q <= 36'd0;
            out_q <= 36'd0;
        end else if (CE0) begin
            pipe_q <= product;
            out_q <= PIPE ? pipe_q : product;
        end
    end
    wire [35:0] p = OUT ? out_q : (PIPE ? pipe_q : product);
    assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19,
            P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1,
            P0} = p;

    wire unused = &{1'b0, C0, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13, C14,
                    C15, C16, C17, SOURCEA, SOURCEB, 1'b0};
endmodule
/* verilator lint_on WIDTH */
`default_nettype wire
